"""memsyncctl's command-line face: argv to fast paths or commands, and their rendered output."""
