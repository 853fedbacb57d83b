"""Multi-period agent-based simulation driving the real exchange core (see docs/SIMULATION.md)."""
