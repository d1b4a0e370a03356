"""Click commands: thin glue between the CLI and the parts (sim, emulators, reports, ...)."""
