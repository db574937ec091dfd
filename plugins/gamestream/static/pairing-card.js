/* GameStream's card on the console's Pairing page: what it is called, what it says
   while GameStream is off, how it asks for the PIN (the card: webui pages/pairing.js). */
(function () {
  "use strict";
  const { el } = PF;
  PF.pairingCards.gamestream = {
    title: "GameStream (Moonlight)",
    off: () => ["GameStream is off on this host (it is opt-in). Start the host with ", el("code", {}, "punktfunk serve --gamestream"),
      " or set ", el("code", {}, "[gamestream] enabled = true"), "; then a Moonlight client can pair here."],
    pinLabel: "PIN shown by the Moonlight client",
    pinButton: "Pair",
  };
})();
