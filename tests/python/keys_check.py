"""Which opaque-key classes accept each string, as openedx-events' Avro deserializer parses them.

stdin: a JSON array of strings. stdout: a JSON object mapping each class name (the Rust type's
name) to a list of booleans, one per string: `cls.from_string(s)` succeeded and gives back `s`.
"""
import json
import sys

from ccx_keys.locator import CCXLocator
from opaque_keys import InvalidKeyError
from opaque_keys.edx.keys import CourseKey, UsageKey
from opaque_keys.edx.locator import (
    LibraryCollectionLocator,
    LibraryContainerLocator,
    LibraryLocatorV2,
    LibraryUsageLocatorV2,
)

# The classes openedx_events/event_bus/avro/custom_serializers.py calls from_string on.
CLASSES = {
    "CourseKey": CourseKey,
    "UsageKey": UsageKey,
    "CcxLocator": CCXLocator,
    "LibraryLocatorV2": LibraryLocatorV2,
    "LibraryUsageLocatorV2": LibraryUsageLocatorV2,
    "LibraryCollectionLocator": LibraryCollectionLocator,
    "LibraryContainerLocator": LibraryContainerLocator,
}


def accepts(cls, s):
    try:
        return str(cls.from_string(s)) == s
    except InvalidKeyError:
        return False


strings = json.load(sys.stdin)
json.dump({name: [accepts(cls, s) for s in strings] for name, cls in CLASSES.items()}, sys.stdout)
