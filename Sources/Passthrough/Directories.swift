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

    public func readdir<S: DirectorySink>(_ ctx: RequestContext, node: NodeID, handle: HandleID, offset: UInt64, plus: Bool, into sink: inout S) throws(Errno) {
        let file = try openFile(handle)
        guard file.inode.isDirectory else { throw Errno.notDirectory }
        guard offset <= UInt64(Int64.max) else { throw Errno.invalidArgument }
        let buffer = try direntBuffer()
        try file.position.withLock { (_) throws(Errno) in
            // Offsets are the host's d_off cookies: stable across calls and concurrent unlinks.
            // Whatever this call reads and does not send is read again from its cookie next time.
            _ = try Sys.lseek(file.fd, Int64(offset), SEEK_SET)
            var full = false
            while !full {
                let filled = try Sys.getdents64(file.fd, buffer)
                if filled <= 0 { return }
                var position = 0
                while position + 19 < filled {
                    let recordLength = Int(buffer.loadUnaligned(fromByteOffset: position + 16, as: UInt16.self))
                    guard recordLength > 19, position + recordLength <= filled else { return }
                    let hostInode = buffer.loadUnaligned(fromByteOffset: position, as: UInt64.self)
                    let next = buffer.loadUnaligned(fromByteOffset: position + 8, as: Int64.self)
                    let type = buffer[position + 18]
                    let namePointer = (buffer.baseAddress! + position + 19).assumingMemoryBound(to: CChar.self)
                    let nameLength = strnlen(namePointer, recordLength - 19)
                    let name = FileName(cString: namePointer, count: nameLength)
                    let entry = DirectoryEntry(inode: hostInode, nextOffset: UInt64(bitPattern: next), type: UInt32(type), name: name)
                    guard sink.fits(nameLength: nameLength) else { full = true; break }
                    var lookedUp: Entry? = nil
                    if plus && !name.isDotOrDotDot {
                        lookedUp = try? lookupChild(file.inode, namePointer)
                    }
                    if !sink.add(entry, plus: lookedUp) {
                        if let lookedUp { forget(lookedUp.nodeID, count: 1) }
                        full = true
                        break
                    }
                    position += recordLength
                }
            }
        }
    }
}
