"""The sandbox's stand-in for IsaacLab's core package (see ../_sandbox_sim.py)."""
