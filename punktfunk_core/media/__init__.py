"""Builtin protocol-neutral media stages: capture sources, encoders, audio, loopback packetizer/sender."""
