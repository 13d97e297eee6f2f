import Sandbox

// The module `Sandbox` also has a type `Sandbox`, so `Sandbox.SandboxMode` cannot be
// spelled where DaemonConfig's twin is visible too; this file imports only Sandbox.
typealias IsolationMode = SandboxMode
typealias FilterAction = SeccompAction
