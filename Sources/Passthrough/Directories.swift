#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import FUSE
import Posix
import Synchronization

/// One getdents64 buffer per thread that lists directories, freed when the thread
/// ends. The daemon's listing memory is bounded by its threads (request queues
/// plus the pool) times `direntBufferSize`, whatever the guest opens.
private let direntBufferKey: pthread_key_t? = try? Sys.threadKeyCreate(destructor: { $0?.deallocate() })

/// Where the fields of a getdents64 record lie, as `struct dirent64` in the C headers
/// has them: d_ino (u64), d_off (s64), d_reclen (u16), d_type (u8), then the name and
/// its NUL; records are padded to 8 bytes. The C target's constants are compile-time
/// values and these are computed, not stored, so the record parser uses immediates.
enum DirentLayout {
    static var inode: Int { Int(CVFS_DIRENT64_INO_OFFSET) }
    static var next: Int { Int(CVFS_DIRENT64_OFF_OFFSET) }
    static var length: Int { Int(CVFS_DIRENT64_RECLEN_OFFSET) }
    static var type: Int { Int(CVFS_DIRENT64_TYPE_OFFSET) }
    static var name: Int { Int(CVFS_DIRENT64_NAME_OFFSET) }

    /// The shortest record: a one-byte name.
    static var smallest: Int { (name + 2 + 7) & ~7 }
    /// The longest record: a 255-byte name.
    static var largest: Int { (name + Int(NAME_MAX) + 1 + 7) & ~7 }
}

extension PassthroughFileSystem {
    /// Size of a thread's getdents64 buffer: many entries per system call, and a
    /// READDIR that stops early re-reads from its cookie next time.
    static let direntBufferSize = 32 * 1024

    /// The calling thread's getdents64 buffer, made on its first READDIR.
    func direntBuffer() throws(Errno) -> UnsafeMutableRawBufferPointer {
        guard let key = direntBufferKey else { throw Errno.noMemory }
        if let existing = Sys.threadValue(key) {
            return UnsafeMutableRawBufferPointer(start: existing, count: Self.direntBufferSize)
        }
        let made = UnsafeMutableRawPointer.allocate(byteCount: Self.direntBufferSize, alignment: 8)
        Sys.setThreadValue(key, made)
        return UnsafeMutableRawBufferPointer(start: made, count: Self.direntBufferSize)
    }

    // MARK: - Directories

    /// OPENDIR: opens the directory node for reading through /proc/self/fd and returns a
    /// handle; nothing is listed until READDIR. EMFILE before the daemon's reserve is touched.
    public func opendir(_ ctx: RequestContext, node: NodeID, flags: UInt32) throws(Errno) -> OpenReply {
        let data = try inode(node)
        guard data.isDirectory else { throw Errno.notDirectory }
        try ensureDescriptorHeadroom()
        let fd = try reopen(data, flags: O_RDONLY | O_DIRECTORY)
        let handle = registerHandle(fd: fd, inode: data)
        return OpenReply(handle: handle, flags: openReplyFlags(directory: true))
    }

    /// RELEASEDIR: drops the handle; its descriptor closes once no READDIR uses it.
    public func releasedir(_ ctx: RequestContext, node: NodeID, handle: HandleID, flags: UInt32) throws(Errno) {
        _ = handles.withLock { $0.files.removeValue(forKey: handle) }
    }

    /// The smallest getdents64 buffer that takes any one record: a 255-byte name.
    static var largestDirentRecord: Int { DirentLayout.largest }

    /// How many bytes of getdents64 records to read for `room` bytes of reply, so that
    /// every record read fits in the reply: a host record is at least 1/7 (READDIRPLUS)
    /// or 3/4 (READDIR) the size of the reply's record for the same name. Reading no
    /// more than fits keeps the host descriptor exactly where the next READDIR starts.
    static func direntChunk(room: Int, plus: Bool, first: Bool, capacity: Int) -> Int {
        let fitting = plus ? room / 7 : room / 4 * 3
        // An empty reply means "end of directory": the first read must take a record.
        return min(capacity, first ? max(fitting, largestDirentRecord) : fitting)
    }

    /// READDIR and READDIRPLUS: lists from the host's d_off cookie `offset`, reading no
    /// more records than the reply has room for. With `plus` every entry but "." and ".."
    /// is looked up (one lookup each, given back when the entry does not fit).
    public func readdir<S: DirectorySink>(_ ctx: RequestContext, node: NodeID, handle: HandleID, offset: UInt64, plus: Bool, into sink: inout S) throws(Errno) {
        let file = try openFile(handle)
        guard file.inode.isDirectory else { throw Errno.notDirectory }
        guard offset <= UInt64(Int64.max) else { throw Errno.invalidArgument }
        let buffer = try direntBuffer()
        try file.position.withLock { (position) throws(Errno) in
            // Offsets are the host's d_off cookies: stable across calls and concurrent unlinks.
            // Whatever a call reads and does not send is read again from its cookie next time.
            if position != offset {
                position = OpenFile.unknownPosition
                _ = try Sys.lseek(file.fd, Int64(offset), SEEK_SET)
                position = offset
            }
            var added = 0
            var full = false
            while !full {
                let chunk = Self.direntChunk(room: sink.remainingBytes, plus: plus, first: added == 0, capacity: buffer.count)
                if chunk < DirentLayout.smallest { return }
                let filled: Int
                do throws(Errno) {
                    filled = try Sys.getdents64(file.fd, UnsafeMutableRawBufferPointer(rebasing: buffer[0..<chunk]))
                } catch {
                    // EINVAL: the next record is longer than a chunk that only the reply's room limited.
                    if error == .invalidArgument && added > 0 { return }
                    position = OpenFile.unknownPosition
                    // Entries already in the reply carry lookups (READDIRPLUS) the guest must
                    // learn of, or they are never forgotten: send them; the next READDIR, from
                    // the last offset, meets the error.
                    if added > 0 { return }
                    throw error
                }
                if filled <= 0 {
                    // At the end some filesystems move the position to an end marker.
                    position = OpenFile.unknownPosition
                    return
                }
                var cursor = 0
                var lastNext = position
                while cursor + DirentLayout.name < filled {
                    let recordLength = Int(buffer.loadUnaligned(fromByteOffset: cursor + DirentLayout.length, as: UInt16.self))
                    guard recordLength > DirentLayout.name, cursor + recordLength <= filled else { break }
                    let hostInode = buffer.loadUnaligned(fromByteOffset: cursor + DirentLayout.inode, as: UInt64.self)
                    let next = UInt64(bitPattern: buffer.loadUnaligned(fromByteOffset: cursor + DirentLayout.next, as: Int64.self))
                    let type = buffer[cursor + DirentLayout.type]
                    let namePointer = (buffer.baseAddress! + cursor + DirentLayout.name).assumingMemoryBound(to: CChar.self)
                    let nameLength = strnlen(namePointer, recordLength - DirentLayout.name)
                    let name = FileName(cString: namePointer, count: nameLength)
                    let entry = DirectoryEntry(inode: hostInode, nextOffset: next, type: UInt32(type), name: name)
                    guard sink.fits(nameLength: nameLength) else { full = true; break }
                    var lookedUp: Entry? = nil
                    if plus && !name.isDotOrDotDot {
                        lookedUp = try? lookupListed(file.inode, namePointer, hostInode: hostInode)
                    }
                    if !sink.add(entry, plus: lookedUp) {
                        if let lookedUp { forget(lookedUp.nodeID, count: 1) }
                        full = true
                        break
                    }
                    added += 1
                    cursor += recordLength
                    lastNext = next
                }
                // Every record read was sent: the descriptor stands after the last one, which
                // is where the next READDIR continues. Otherwise it has to seek back.
                position = cursor == filled ? lastNext : OpenFile.unknownPosition
                if cursor != filled { return }
            }
        }
    }
}
