"""Personal data: detection in free text, and a vault that tokenizes it with per-subject, shreddable keys."""

from .detect import KINDS, Kind, Span, find, replace
from .vault import TOKEN, PiiVault, PiiVaultError, Protected, forget_subject, load_or_create_master_key

__all__ = [
    "KINDS",
    "TOKEN",
    "Kind",
    "PiiVault",
    "PiiVaultError",
    "Protected",
    "Span",
    "find",
    "forget_subject",
    "load_or_create_master_key",
    "replace",
]
