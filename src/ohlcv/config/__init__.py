"""Profiles: a typed schema, YAML profiles, dotted overrides."""

from ohlcv.config.loader import (
    ProfileInfo,
    find_profile,
    list_profiles,
    load_profile,
    to_yaml,
    write_resolved_profile,
)
from ohlcv.config.schema import Profile

__all__ = [
    "Profile",
    "ProfileInfo",
    "find_profile",
    "list_profiles",
    "load_profile",
    "to_yaml",
    "write_resolved_profile",
]
