/* punktfunk/1's card on the console's Pairing page: the host opens a pairing window
   with a PIN the client then enters (the card: webui pages/pairing.js). */
(function () {
  "use strict";
  PF.pairingCards.native = {
    title: "punktfunk native",
    pinLabel: "Pairing PIN (the client enters the same)",
    pinButton: "Open pairing",
  };
})();
