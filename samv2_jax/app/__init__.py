"""The `samv2` command: subcommands, the track job, prompt files, global settings."""
