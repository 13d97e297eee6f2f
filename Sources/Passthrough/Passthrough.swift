// The Passthrough module.
