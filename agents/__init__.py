"""camwatch processes: capture sources, runtime, sinks and the CLI."""
