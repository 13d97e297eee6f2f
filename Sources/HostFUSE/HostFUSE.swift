// The HostFUSE module.
