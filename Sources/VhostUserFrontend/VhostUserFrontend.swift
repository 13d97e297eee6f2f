// The VhostUserFrontend module.
