"""The registrar's session cut: ``clinicam.provisioning.kick`` (the admin machine uses it too)."""

from clinicam.provisioning.kick import KICK_MINUTES, kick

__all__ = ["KICK_MINUTES", "kick"]
