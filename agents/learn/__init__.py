"""Learning a site's normal (docs/learning.md): what watched devices do, and a proposed policy from it.

- :mod:`agents.learn.observe`: what the engine saw, aggregated and bounded (``Observations``), recorded by a
  rule-like component the engine runs beside the rules, and what the rules flagged;
- :mod:`agents.learn.propose`: the learned allow rules (support, wildcards, groups) and the findings;
- :mod:`agents.learn.render`: the learned policy as YAML, every learned rule with its comment;
- :mod:`agents.learn.mud`: RFC 8520 MUD files, one per device model or vendor;
- :mod:`agents.learn.command`: ``camwatch learn``;
- :mod:`agents.learn.mode`: the agent's learning mode (``learning:``), per-device states and its state file.
"""
