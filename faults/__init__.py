"""The nemesis: fault kinds (one module per family: process, network, clock, netns), their
schedules, and the Nemesis that applies and heals them on time, recording each step.

Each kind registers itself with `@kind(...)` (faults/base.py) when its family module is
imported; the families are imported here, once, so `known_kinds()` is complete as soon as
anything of `onceproof.faults` is imported. A new kind in an existing family touches only that
family's module; a new family is one new module and one line below."""
from onceproof.faults import clock, netns, network, process  # noqa: F401 - imported for their registrations
