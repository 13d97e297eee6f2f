/// How the source tells the destination where each inode is (`--migration-mode`).
public enum MigrationMode: String, Sendable, Equatable, CaseIterable {
    /// A path below the shared directory, found when the state is saved.
    case findPaths = "find-paths"
    /// A file handle (name_to_handle_at), opened with open_by_handle_at on the
    /// destination: survives renames, needs the same filesystem on both sides.
    case fileHandles = "file-handles"
}

/// What the destination does with a file it cannot restore (`--migration-on-error`).
public enum MigrationErrorPolicy: String, Sendable, Equatable, CaseIterable {
    /// Fail the load: the destination frontend fails, and the guest is resumed on the source.
    case abort
    /// Keep going: that inode (and its open handles) answer EIO/EBADF to the guest.
    case guestError = "guest-error"
}

/// The live-migration options (`--migration-mode`, `--migration-on-error`,
/// `--migration-verify-handles`, `--migration-confirm-paths`; docs/migration.md).
public struct MigrationOptions: Sendable, Equatable {
    public var mode: MigrationMode = .findPaths
    public var onError: MigrationErrorPolicy = .abort
    /// file-handles: check that a handle opens a file with the source's inode number.
    public var verifyHandles = false
    /// find-paths: open each path found on the source and check it leads to the same file.
    public var confirmPaths = false

    public init() {}
}
