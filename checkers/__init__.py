"""Pure checkers of histories: the record model and reader, exactly-once, linearizability.

Imports nothing else of onceproof, so a history from anywhere (a crashed run, a Jepsen
log) can be checked. A checker is a function of a history returning a dict with
`valid` in {True, False, "unknown"}; `compose({...})` runs several as one.
"""
from onceproof.checkers.compose import check_safe, compose, merge_valid

__all__ = ["check_safe", "compose", "merge_valid"]
