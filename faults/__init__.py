"""The nemesis: fault kinds (one module per family: process, network, clock), their
schedules, and the Nemesis that applies and heals them on time, recording each step."""
