// The VhostUser module.
