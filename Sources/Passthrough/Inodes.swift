#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import FUSE
import Posix
import Synchronization

/// The host identity of a file: the same (dev, ino, mount) is the same guest node.
struct InodeKey: Hashable, Sendable {
    var device: UInt64
    var inode: UInt64
    var mountID: UInt64
}

extension InodeKey {
    /// The key of the file `Sys.statxIdentity` described.
    init(_ attributes: stat, mountID: UInt64) {
        self.init(device: UInt64(attributes.st_dev), inode: UInt64(attributes.st_ino), mountID: mountID)
    }
}

/// How many inode descriptors are held right now (for the fd budget).
final class DescriptorCount: Sendable {
    let value = Atomic<Int>(0)
}

/// One host file the guest knows. Immutable and reference-counted: a request
/// that fetched it keeps its descriptor alive even if a FORGET races with it,
/// so a descriptor number is never reused under a running request.
final class InodeData: Sendable {
    let key: InodeKey
    /// The S_IFMT bits; a file's type never changes.
    let fileType: mode_t
    /// The O_PATH descriptor, or -1 when held as a file handle.
    let fd: Int32
    /// A `struct file_handle` (header included) when `fd` is -1.
    let handle: [UInt8]
    /// A descriptor on the handle's mount for open_by_handle_at (owned by the mount table).
    let mountFD: Int32
    private let count: DescriptorCount?

    init(key: InodeKey, fileType: mode_t, fd: Int32, count: DescriptorCount?) {
        self.key = key; self.fileType = fileType; self.fd = fd
        self.handle = []; self.mountFD = -1; self.count = count
        count?.value.add(1, ordering: .relaxed)
    }

    init(key: InodeKey, fileType: mode_t, handle: [UInt8], mountFD: Int32) {
        self.key = key; self.fileType = fileType; self.fd = -1
        self.handle = handle; self.mountFD = mountFD; self.count = nil
    }

    deinit {
        if fd >= 0 {
            Sys.close(fd)
            count?.value.subtract(1, ordering: .relaxed)
        }
    }

    var isDirectory: Bool { fileType == S_IFDIR }
    var isRegular: Bool { fileType == S_IFREG }
    var isSymlink: Bool { fileType == S_IFLNK }
    var isHandle: Bool { fd < 0 }

    /// Opens the file anew from its handle with `flags` (O_PATH, O_RDONLY...).
    func openFromHandle(flags: Int32) throws(Errno) -> Int32 {
        // open_by_handle_at only reads the handle, so the shared bytes go as they are:
        // a mutable copy would cost an allocation on every access to the node.
        let result = handle.withUnsafeBytes { (bytes) -> Result<Int32, Errno> in
            guard let base = bytes.baseAddress else { return .failure(.stale) }
            return Result { () throws(Errno) -> Int32 in
                try Sys.openByHandleAt(mountFD, UnsafeMutableRawPointer(mutating: base), flags: flags)
            }
        }
        return try result.get()
    }

    /// Calls `body` with an O_PATH descriptor of this file, opened from the handle if needed.
    func withPathFD<T>(_ body: (Int32) throws(Errno) -> T) throws(Errno) -> T {
        if fd >= 0 { return try body(fd) }
        let temporary = try openFromHandle(flags: CVFS_O_PATH | O_NOFOLLOW)
        defer { Sys.close(temporary) }
        return try body(temporary)
    }
}

/// A node in the table: the file plus the kernel's lookup count.
struct Node {
    var data: InodeData
    var lookups: UInt64
    /// The root of a mount below the shared directory (FUSE_ATTR_SUBMOUNT).
    var isSubmount = false
}

/// One shard of the inode table. Node ids are ours, handed out in order and never
/// reused, so a constant generation is enough to keep (node id, generation) unique.
struct InodeTable {
    var nodes: [NodeID: Node] = [:]
    var byKey: [InodeKey: NodeID] = [:]
    /// The next id's sequence number; ids are `sequence << shardBits | shard`.
    var nextSequence: NodeID = 1

    /// Takes one more lookup on an existing node with `key`.
    mutating func reference(_ key: InodeKey) -> NodeID? {
        guard let id = byKey[key], var node = nodes[id] else { return nil }
        node.lookups &+= 1
        nodes[id] = node
        return id
    }

    /// True when a node with `key` is held by a descriptor (its inode cannot have been reused).
    func holdsDescriptor(_ key: InodeKey) -> Bool {
        guard let id = byKey[key], let node = nodes[id] else { return false }
        return !node.data.isHandle
    }

    /// Takes one more lookup on a node with `key` held by a descriptor; its id and
    /// whether it is a submount root. nil for unknown keys and handle-held nodes.
    mutating func referenceHeld(_ key: InodeKey) -> (NodeID, Bool)? {
        guard let id = byKey[key], var node = nodes[id], !node.data.isHandle else { return nil }
        node.lookups &+= 1
        nodes[id] = node
        return (id, node.isSubmount)
    }

    /// Subtracts lookups; returns the dropped file (to be released outside the lock).
    mutating func forget(_ id: NodeID, count: UInt64) -> InodeData? {
        guard id != rootNodeID, var node = nodes[id] else { return nil }
        node.lookups -= min(count, node.lookups)
        if node.lookups > 0 {
            nodes[id] = node
            return nil
        }
        nodes[id] = nil
        if byKey[node.data.key] == id { byKey[node.data.key] = nil }
        return node.data
    }
}

/// A lock and the shard it guards (a class, so shards can sit in an array).
final class InodeShard: Sendable {
    let table = Mutex(InodeTable())
}

/// The inode table, split into shards by host identity so that requests on
/// different queues rarely wait for each other: a node's id names its shard, and
/// its key hashes to the same one, so every operation takes one shard's lock.
///
/// Bounded: at most `maxNodes` nodes (ENFILE beyond). Each node holds a descriptor
/// (itself bounded by the descriptor budget) or a file handle of at most 136 bytes,
/// plus about 200 bytes of table: about 350 MB at the bound.
final class InodeStore: Sendable {
    static let shardBits = 4
    static let shardCount = 1 << shardBits
    static let maxNodes = 1 << 20
    let maxNodesPerShard: Int

    private let shards: [InodeShard] = (0..<InodeStore.shardCount).map { _ in InodeShard() }
    /// The shard the root's key hashes to; the root's id (1) is kept there.
    private let rootShard: Int
    /// A real directory descriptor per mount, for open_by_handle_at. Held for the process lifetime.
    let mountFDs = Mutex<[UInt64: Int32]>([:])

    /// A store holding `root` as node 1, and at most about `maxNodes` others.
    init(root: InodeData, maxNodes: Int = InodeStore.maxNodes) {
        maxNodesPerShard = max(1, maxNodes / Self.shardCount)
        rootShard = Self.shardIndex(root.key)
        shards[rootShard].table.withLock { table in
            table.nodes[rootNodeID] = Node(data: root, lookups: 1)
            table.byKey[root.key] = rootNodeID
        }
    }

    static func shardIndex(_ key: InodeKey) -> Int {
        // Inode numbers vary in the low bits; mixing in the device keeps mounts apart.
        let mixed = (key.inode ^ (key.device &* 0x9E37_79B9_7F4A_7C15)) &* 0xBF58_476D_1CE4_E5B9
        return Int(truncatingIfNeeded: mixed >> 60) & (shardCount - 1)
    }

    private func shard(_ key: InodeKey) -> InodeShard { shards[Self.shardIndex(key)] }

    private func shard(_ id: NodeID) -> InodeShard {
        id == rootNodeID ? shards[rootShard] : shards[Int(truncatingIfNeeded: id) & (Self.shardCount - 1)]
    }

    /// The file of node `id`.
    func data(_ id: NodeID) -> InodeData? {
        shard(id).table.withLock { $0.nodes[id]?.data }
    }

    /// The kernel's lookup count of node `id`.
    func lookups(_ id: NodeID) -> UInt64? {
        shard(id).table.withLock { $0.nodes[id]?.lookups }
    }

    func isSubmount(_ id: NodeID) -> Bool {
        shard(id).table.withLock { $0.nodes[id]?.isSubmount ?? false }
    }

    func markSubmount(_ id: NodeID) {
        shard(id).table.withLock { $0.nodes[id]?.isSubmount = true }
    }

    func reference(_ key: InodeKey) -> NodeID? {
        shard(key).table.withLock { $0.reference(key) }
    }

    func referenceHeld(_ key: InodeKey) -> (NodeID, Bool)? {
        shard(key).table.withLock { $0.referenceHeld(key) }
    }

    func holdsDescriptor(_ key: InodeKey) -> Bool {
        shard(key).table.withLock { $0.holdsDescriptor(key) }
    }

    /// The node with `key` and its file, if any.
    func existing(_ key: InodeKey) -> (NodeID, InodeData)? {
        shard(key).table.withLock { table in
            guard let id = table.byKey[key], let node = table.nodes[id] else { return nil }
            return (id, node.data)
        }
    }

    /// Unmaps `key` from node `id` (which stays until forgotten), so the key gets a new node.
    func unmapKey(_ key: InodeKey, from id: NodeID) {
        shard(key).table.withLock { table in
            if table.byKey[key] == id { table.byKey[key] = nil }
        }
    }

    /// Takes a lookup on the node with `data.key`, or enters `data` as a new node with
    /// one lookup. ENFILE when the shard is full.
    func referenceOrInsert(_ data: InodeData) throws(Errno) -> NodeID {
        let index = Self.shardIndex(data.key)
        let result = shards[index].table.withLock { table -> NodeID? in
            if let id = table.reference(data.key) { return id }
            guard table.nodes.count < maxNodesPerShard else { return nil }
            let id = table.nextSequence << NodeID(Self.shardBits) | NodeID(index)
            table.nextSequence &+= 1
            table.nodes[id] = Node(data: data, lookups: 1)
            table.byKey[data.key] = id
            return id
        }
        guard let result else { throw Errno(ENFILE) }
        return result
    }

    /// Subtracts lookups; returns the dropped file (to be released outside the lock).
    func forget(_ id: NodeID, count: UInt64) -> InodeData? {
        shard(id).table.withLock { $0.forget(id, count: count) }
    }

    /// Every node but the root, removed; returned to be released outside the locks.
    func removeAllButRoot() -> [Node] {
        var dropped: [Node] = []
        for shard in shards {
            shard.table.withLock { table in
                for (id, node) in table.nodes where id != rootNodeID { dropped.append(node) }
                table.nodes = table.nodes.filter { $0.key == rootNodeID }
                table.byKey = table.byKey.filter { $0.value == rootNodeID }
            }
        }
        return dropped
    }

    /// How many nodes there are, the root included.
    var count: Int {
        shards.reduce(0) { sum, shard in sum + shard.table.withLock { $0.nodes.count } }
    }

    /// Every node's file (for tests and diagnostics).
    var allData: [InodeData] {
        shards.flatMap { shard in shard.table.withLock { $0.nodes.values.map(\.data) } }
    }
}

// MARK: - Migration (Migration.swift reaches the store only through these)

extension InodeStore {
    /// Every node with its id, and an id above every id handed out so far (node ids
    /// are never reused, so the destination continues from there).
    func migrationSnapshot() -> (nodes: [(NodeID, Node)], nextID: NodeID) {
        var nodes: [(NodeID, Node)] = []
        var nextSequence: NodeID = 1
        for shard in shards {
            shard.table.withLock { table in
                nodes.append(contentsOf: table.nodes.map { ($0.key, $0.value) })
                nextSequence = max(nextSequence, table.nextSequence)
            }
        }
        return (nodes, nextSequence << NodeID(Self.shardBits))
    }

    /// Whether only the root is known: a destination that already served requests
    /// cannot take a state on top.
    var isPristine: Bool { count == 1 }

    /// Sets the root's lookup count (the source's).
    func restoreRootLookups(_ lookups: UInt64) {
        shards[rootShard].table.withLock { $0.nodes[rootNodeID]?.lookups = lookups }
    }

    /// Enters a node restored from a migration state under its old id, in the shard
    /// the id names. It is found by key too (`indexed`) when the key hashes to that
    /// same shard, as it does when both sides see the same device and inode number;
    /// otherwise a later LOOKUP of the file makes a second node for it.
    func restore(id: NodeID, data: InodeData, lookups: UInt64, indexed: Bool) {
        guard id != rootNodeID else { return }
        let index = Int(truncatingIfNeeded: id) & (Self.shardCount - 1)
        let findable = indexed && Self.shardIndex(data.key) == index
        shards[index].table.withLock { table in
            table.nodes[id] = Node(data: data, lookups: lookups)
            if findable && table.byKey[data.key] == nil { table.byKey[data.key] = id }
            let sequence = id >> NodeID(Self.shardBits)
            if table.nextSequence <= sequence { table.nextSequence = sequence &+ 1 }
        }
    }

    /// New ids start at `nextID` or above in every shard (the source's ids are not reused).
    func continueAfter(_ nextID: NodeID) {
        let sequence = nextID >> NodeID(Self.shardBits)
        for shard in shards {
            shard.table.withLock { table in
                if table.nextSequence < sequence { table.nextSequence = sequence }
            }
        }
    }
}

// MARK: - The backend's side of the store

extension PassthroughFileSystem {
    /// The file of node `id`; EBADF for a node the table does not hold.
    func inode(_ id: NodeID) throws(Errno) -> InodeData {
        guard let data = inodes.data(id) else { throw Errno.badFileDescriptor }
        return data
    }

    /// Enters an O_PATH descriptor into the table (taking ownership of it) with one lookup.
    func adopt(_ fd: Int32) throws(Errno) -> Entry {
        try adoptKeyed(fd).0
    }

    func adoptKeyed(_ fd: Int32) throws(Errno) -> (Entry, InodeKey) {
        let identity: (stat, UInt64)
        do {
            identity = try Sys.statxIdentity(fd, "", flags: CVFS_AT_EMPTY_PATH | CVFS_AT_SYMLINK_NOFOLLOW)
        } catch {
            Sys.close(fd)
            throw error
        }
        let attributes = identity.0
        let key = InodeKey(attributes, mountID: identity.1)
        dropIfReused(key, fd: fd)
        if let id = inodes.reference(key) {
            Sys.close(fd)
            return (makeEntry(id, attributes), key)
        }
        let data: InodeData
        do {
            data = try represent(fd, key: key, fileType: attributes.st_mode & S_IFMT)
        } catch {
            Sys.close(fd)
            throw error
        }
        // Another thread may have entered the same file meanwhile: keep one node.
        // The losing `data` is released after the lock, closing its descriptor.
        let id = try inodes.referenceOrInsert(data)
        return (makeEntry(id, attributes), key)
    }

    /// A node held by handle does not pin its inode: once the file is gone its
    /// inode number can come back as another file. The handle (which carries the
    /// generation) tells them apart; a mismatch unmaps the old node so a new one is made.
    func dropIfReused(_ key: InodeKey, fd: Int32) {
        let existing = inodes.existing(key)
        guard let (id, data) = existing, data.isHandle, let fresh = try? fileHandle(fd), fresh != data.handle else { return }
        inodes.unmapKey(key, from: id)
    }

    /// Decides fd or handle for a new inode; consumes `fd` only on success.
    func represent(_ fd: Int32, key: InodeKey, fileType: mode_t) throws(Errno) -> InodeData {
        let overBudget = descriptorCount.value.load(ordering: .relaxed) >= fdBudget
        guard configuration.inodeFileHandles != .never || overBudget else {
            return InodeData(key: key, fileType: fileType, fd: fd, count: descriptorCount)
        }
        do {
            let handle = try fileHandle(fd)
            let mountFD = try mountDescriptor(for: key.mountID, from: fd, fileType: fileType)
            Sys.close(fd)
            return InodeData(key: key, fileType: fileType, handle: handle, mountFD: mountFD)
        } catch {
            if configuration.inodeFileHandles == .mandatory { throw error }
            // No handles here (or no mount descriptor yet): hold the descriptor after all.
            return InodeData(key: key, fileType: fileType, fd: fd, count: descriptorCount)
        }
    }

    func fileHandle(_ fd: Int32) throws(Errno) -> [UInt8] {
        let capacity = Int(CVFS_MAX_HANDLE_SZ)
        var buffer = [UInt8](repeating: 0, count: 8 + capacity)
        let result = buffer.withUnsafeMutableBytes { (raw) -> Result<Int, Errno> in
            raw.storeBytes(of: UInt32(capacity), toByteOffset: 0, as: UInt32.self)
            return Result { () throws(Errno) -> Int in
                _ = try Sys.nameToHandleAt(fd, "", raw.baseAddress!, flags: CVFS_AT_EMPTY_PATH)
                return Int(raw.load(fromByteOffset: 0, as: UInt32.self))
            }
        }
        let length = try result.get()
        guard length <= capacity else { throw Errno.overflow }
        // Trimmed in place: the buffer is the handle, no second array.
        buffer.removeSubrange((8 + length)...)
        return buffer
    }

    /// A real descriptor on mount `mountID` for open_by_handle_at, made once per mount.
    func mountDescriptor(for mountID: UInt64, from fd: Int32, fileType: mode_t) throws(Errno) -> Int32 {
        if let existing = inodes.mountFDs.withLock({ $0[mountID] }) { return existing }
        // open_by_handle_at wants an openable descriptor; only a directory is safe to open.
        guard fileType == S_IFDIR else { throw Errno.badFileDescriptor }
        let opened = try withProcName(fd) { (name) throws(Errno) -> Int32 in
            try Sys.openat(procSelfFD, name, O_RDONLY | O_DIRECTORY)
        }
        let kept = inodes.mountFDs.withLock { table -> (Int32, Bool) in
            if let existing = table[mountID] { return (existing, false) }
            table[mountID] = opened
            return (opened, true)
        }
        if !kept.1 { Sys.close(opened) }
        return kept.0
    }

    // MARK: - The descriptor budget

    /// Descriptors the daemon keeps for itself: eventfds of a queue the frontend
    /// restarts, fds the frontend sends, the vhost-user connection. A guest that opens
    /// files until the table is nearly full gets EMFILE for its open; the device goes on.
    static let reservedDescriptors = 64

    /// What the backend holds right now, for the statistics: inodes the guest knows,
    /// files and directories it has open, and inodes held as O_PATH descriptors.
    public var openCounts: (inodes: Int, openFiles: Int, inodeDescriptors: Int) {
        (inodes.count, handles.withLock { $0.files.count },
         descriptorCount.value.load(ordering: .relaxed))
    }

    /// Fails with EMFILE when one more open file would eat into the reserve.
    /// Checked before anything is created or looked up, so a refused CREATE leaves nothing behind.
    func ensureDescriptorHeadroom() throws(Errno) {
        let held = handles.withLock { $0.files.count } + descriptorCount.value.load(ordering: .relaxed)
        if held + Self.reservedDescriptors >= descriptorLimit { throw Errno.tooManyOpenFiles }
    }
}
