#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import FUSE
import IDTranslation
import Posix

// `--translate-uid` / `--translate-gid` applied by the backend. The guest speaks guest
// ids, the host file system holds host ids; the translation sits at the few places
// where ids cross:
//   - the caller of a request, before the backend acts as it (`Credentials.run`);
//   - owners in replies (`makeEntry`, `attributesReply`), readdirplus included;
//   - the new owner of SETATTR (chown);
//   - uids and gids inside POSIX ACL xattrs, both ways;
//   - the caller's gid when setgid-clearing compares it with a file's group.
// Without rules `idTranslation` is nil and every hook returns at once.

extension PassthroughFileSystem {
    /// Attributes as the guest sees them: owners translated host to guest.
    func guestAttributes(_ st: stat) -> stat {
        guard let ids = idTranslation else { return st }
        var shown = st
        shown.st_uid = ids.uid.toGuest(st.st_uid)
        shown.st_gid = ids.gid.toGuest(st.st_gid)
        return shown
    }

    /// A GETATTR/SETATTR reply for host attributes `st`.
    func attributesReply(_ st: stat) -> AttributesReply {
        AttributesReply(attributes: guestAttributes(st), timeout: timeout)
    }

    /// The host owner for a SETATTR's guest uid and gid (`UInt32.max`: leave unchanged).
    /// EPERM when a forbid-guest rule refuses either.
    func hostOwner(uid: UInt32, gid: UInt32) throws(Errno) -> (uid: UInt32, gid: UInt32) {
        guard let ids = idTranslation else { return (uid, gid) }
        let keep = UInt32.max
        guard let hostUID = uid == keep ? keep : ids.uid.toHost(uid),
              let hostGID = gid == keep ? keep : ids.gid.toHost(gid) else { throw Errno.permissionDenied }
        return (hostUID, hostGID)
    }

    /// The caller's gid as a host gid, for comparing with a file's group; a forbidden gid
    /// matches no file's group.
    func callerHostGID(_ gid: UInt32) -> UInt32 {
        guard let ids = idTranslation else { return gid }
        return ids.gid.toHost(gid) ?? UInt32.max
    }

    /// Whether `name` is one of the two POSIX ACL xattrs, whose values carry ids.
    static func isACLName(_ name: FileName) -> Bool {
        name.bytes.elementsEqual("system.posix_acl_access".utf8) || name.bytes.elementsEqual("system.posix_acl_default".utf8)
    }

    /// The value of an ACL xattr the guest sets, with its ids translated to the host's.
    /// nil: nothing to translate (no rules, not an ACL). EPERM for a forbidden id.
    func hostACLValue(_ name: FileName, _ value: UnsafeRawBufferPointer) throws(Errno) -> [UInt8]? {
        guard let ids = idTranslation, Self.isACLName(name) else { return nil }
        var bytes = [UInt8](value)
        guard try rewriteACLIDs(&bytes, ids: ids, toHost: true) else { return nil }
        return bytes
    }

    /// Translates, in place, the ids of an ACL xattr value read from the host.
    func guestACLValue(_ name: FileName, _ value: UnsafeMutableRawBufferPointer) {
        guard let ids = idTranslation, Self.isACLName(name), !value.isEmpty else { return }
        var bytes = [UInt8](value)
        // Host to guest never fails.
        if (try? rewriteACLIDs(&bytes, ids: ids, toHost: false)) == true {
            bytes.withUnsafeBytes { value.copyMemory(from: $0) }
        }
    }
}

/// Rewrites the ids of the ACL_USER and ACL_GROUP entries of a POSIX ACL xattr value
/// (`struct posix_acl_xattr_header` then `struct posix_acl_xattr_entry`s, little-endian).
/// Returns false, changing nothing, when the value is not a well-formed ACL of the known
/// version: the host kernel judges those itself. Throws EPERM when `toHost` and a guest
/// id is forbidden.
func rewriteACLIDs(_ bytes: inout [UInt8], ids: IDTranslations, toHost: Bool) throws(Errno) -> Bool {
    let headerSize = MemoryLayout<posix_acl_xattr_header>.size
    let entrySize = MemoryLayout<posix_acl_xattr_entry>.size
    guard bytes.count >= headerSize, (bytes.count - headerSize) % entrySize == 0,
          readLE32(bytes, 0) == UInt32(POSIX_ACL_XATTR_VERSION) else { return false }
    var offset = headerSize
    while offset + entrySize <= bytes.count {
        let tag = Int32(readLE16(bytes, offset))
        // e_tag (2 bytes), e_perm (2 bytes), then e_id.
        let idOffset = offset + MemoryLayout<UInt16>.size * 2
        let table: IDTranslation? = tag == ACL_USER ? ids.uid : tag == ACL_GROUP ? ids.gid : nil
        if let table {
            let id = readLE32(bytes, idOffset)
            let mapped: UInt32
            if toHost {
                guard let host = table.toHost(id) else { throw Errno.permissionDenied }
                mapped = host
            } else {
                mapped = table.toGuest(id)
            }
            writeLE32(&bytes, idOffset, mapped)
        }
        offset += entrySize
    }
    return true
}

private func readLE16(_ b: [UInt8], _ at: Int) -> UInt16 {
    UInt16(b[at]) | UInt16(b[at + 1]) << 8
}

private func readLE32(_ b: [UInt8], _ at: Int) -> UInt32 {
    UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
}

private func writeLE32(_ b: inout [UInt8], _ at: Int, _ v: UInt32) {
    for i in 0..<4 { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
}
