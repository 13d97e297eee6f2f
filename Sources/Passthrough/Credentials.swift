#if canImport(Glibc)
import Glibc
#endif
import FUSE
import IDTranslation
import Posix

/// Runs node-creating system calls with the guest caller's fsuid/fsgid, so the
/// host kernel assigns ownership and checks permissions as it would for the caller.
/// Only the calling thread changes (raw per-thread syscalls); gid before uid,
/// restored in reverse before returning. With id translation the caller's guest ids
/// become host ids first (EPERM for a forbidden one).
struct Credentials: Sendable {
    let daemonUID: uid_t
    let daemonGID: gid_t
    let daemonGroups: [gid_t]
    let translation: IDTranslations?

    init(translation: IDTranslations? = nil) {
        daemonUID = Sys.geteuid()
        daemonGID = Sys.getegid()
        daemonGroups = (try? Sys.getgroups()) ?? []
        self.translation = translation
    }

    func run<T>(_ guestCaller: RequestContext, supplementaryGroup guestGroup: UInt32?, _ body: () throws(Errno) -> T) throws(Errno) -> T {
        var ctx = guestCaller
        var supplementaryGroup = guestGroup
        if let translation {
            guard let uid = translation.uid.toHost(ctx.uid), let gid = translation.gid.toHost(ctx.gid) else {
                throw Errno.permissionDenied
            }
            ctx.uid = uid
            ctx.gid = gid
            if let group = guestGroup {
                guard let hostGroup = translation.gid.toHost(group) else { throw Errno.permissionDenied }
                // Squashed onto the primary group it adds nothing, and leaving it out keeps
                // a daemon that cannot call setgroups (a user namespace of its own id) working.
                supplementaryGroup = hostGroup == gid ? nil : hostGroup
            }
        }
        if ctx.uid == daemonUID && ctx.gid == daemonGID && supplementaryGroup == nil {
            return try body()
        }
        let keep = UInt32.max // -1: leave unchanged
        // The daemon's own supplementary groups must not lend the caller their access.
        try Sys.threadSetgroups(supplementaryGroup.map { [$0] } ?? [])
        do {
            try Sys.threadSetresgid(keep, ctx.gid, keep)
        } catch {
            restoreGroups()
            throw error
        }
        do {
            try Sys.threadSetresuid(keep, ctx.uid, keep)
        } catch {
            restoreGID()
            restoreGroups()
            throw error
        }
        defer {
            // A thread that cannot get its identity back must not serve another request.
            do { try Sys.threadSetresuid(keep, daemonUID, keep) } catch { fatalError("cannot restore the daemon uid: \(error)") }
            restoreGID()
            restoreGroups()
        }
        return try body()
    }

    private func restoreGID() {
        do { try Sys.threadSetresgid(UInt32.max, daemonGID, UInt32.max) } catch { fatalError("cannot restore the daemon gid: \(error)") }
    }

    private func restoreGroups() {
        do { try Sys.threadSetgroups(daemonGroups) } catch { fatalError("cannot restore the daemon groups: \(error)") }
    }
}
