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

    public func opendir(_ ctx: RequestContext, node: NodeID, flags: UInt32) throws(Errno) -> OpenReply {
        let data = try inode(node)
        guard data.isDirectory else { throw Errno.notDirectory }
        try ensureDescriptorHeadroom()
        let fd = try reopen(data, flags: O_RDONLY | O_DIRECTORY)
        let handle = registerHandle(fd: fd, inode: data)
        return OpenReply(handle: handle, flags: openReplyFlags(directory: true))
    }

    public func releasedir(_ ctx: RequestContext, node: NodeID, handle: HandleID, flags: UInt32) throws(Errno) {
        _ = handles.withLock { $0.files.removeValue(forKey: handle) }
    }

    /// The smallest getdents64 buffer that takes any one record: a 255-byte name.
    static let largestDirentRecord = (19 + 256 + 7) & ~7

    /// How many bytes of getdents64 records to read for `room` bytes of reply, so that
    /// every record read fits in the reply: a host record is at least 1/7 (READDIRPLUS)
    /// or 3/4 (READDIR) the size of the reply's record for the same name. Reading no
    /// more than fits keeps the host descriptor exactly where the next READDIR starts.
    static func direntChunk(room: Int, plus: Bool, first: Bool, capacity: Int) -> Int {
        let fitting = plus ? room / 7 : room / 4 * 3
        // An empty reply means "end of directory": the first read must take a record.
        return min(capacity, first ? max(fitting, largestDirentRecord) : fitting)
    }

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
                if chunk < 24 { return }
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
                while cursor + 19 < filled {
                    let recordLength = Int(buffer.loadUnaligned(fromByteOffset: cursor + 16, as: UInt16.self))
                    guard recordLength > 19, cursor + recordLength <= filled else { break }
                    let hostInode = buffer.loadUnaligned(fromByteOffset: cursor, as: UInt64.self)
                    let next = UInt64(bitPattern: buffer.loadUnaligned(fromByteOffset: cursor + 8, as: Int64.self))
                    let type = buffer[cursor + 18]
                    let namePointer = (buffer.baseAddress! + cursor + 19).assumingMemoryBound(to: CChar.self)
                    let nameLength = strnlen(namePointer, recordLength - 19)
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
