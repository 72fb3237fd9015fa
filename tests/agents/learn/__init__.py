"""Tests of agents/learn: camwatch learn, the proposal, MUD files, the agent's learning mode."""
