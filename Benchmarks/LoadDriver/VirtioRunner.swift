#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import Posix
import VhostUserFrontend

/// A daemon with a connected frontend and FUSE client, set up for the workload.
final class VirtioSession {
    static let maxDepth = 16

    let daemon: DaemonProcess
    let frontend: VhostUserFrontend
    let fuse: FuseClient
    let statNode: UInt64
    let readNode: UInt64
    let readHandle: UInt64
    let writeNode: UInt64
    let writeHandle: UInt64
    let listNode: UInt64
    /// VmRSS of the daemon's process tree right after FUSE INIT (the guest just mounted), KiB.
    let mountedResidentKiB: Int

    init(binary: String, directory: String, label: String, extraArguments: [String]) throws(FrontendError) {
        daemon = try DaemonProcess(binary: binary, socketPath: directory + "/\(label).sock",
                                   sharedDirectory: directory + "/\(label)-shared", logPath: directory + "/\(label).log",
                                   extraArguments: extraArguments)
        do {
            // Each slot holds 1 MiB in and out; the rest is rings.
            frontend = try Self.connect(daemon.socketPath)
            try frontend.handshake()
            fuse = try FuseClient(frontend: frontend, slots: Self.maxDepth, maxData: 1 << 20)
            try fuse.initialize()
            mountedResidentKiB = treeResidentKiB(daemon.pid)
            statNode = try fuse.lookup(name: Fixture.statFile).nodeid
            readNode = try fuse.lookup(name: Fixture.readFile).nodeid
            readHandle = try fuse.open(node: readNode, flags: O_RDONLY).fh
            writeNode = try fuse.lookup(name: Fixture.writeFile).nodeid
            writeHandle = try fuse.open(node: writeNode, flags: O_RDWR).fh
            listNode = try fuse.lookup(name: Fixture.listDirectory).nodeid
        } catch {
            daemon.stop()
            throw error
        }
    }

    /// Connects to the daemon's socket. A daemon's socket file appears at bind(), a
    /// moment before it listens: a refused connection is tried again for up to a second.
    static func connect(_ socketPath: String) throws(FrontendError) -> VhostUserFrontend {
        var attempts = 0
        while true {
            do {
                return try VhostUserFrontend(socketPath: socketPath, memorySize: 128 << 20)
            } catch {
                attempts += 1
                if attempts >= 50 { throw error }
                usleep(20_000)
            }
        }
    }

    func close() {
        frontend.close()
        daemon.stop()
    }

    private struct SlotState {
        var step = 0
        var started: UInt64 = 0
        var node: UInt64 = 0
        var handle: UInt64 = 0
        var name = ""
        /// readdirplus: the offset to continue from.
        var offset: UInt64 = 0
    }

    /// A listing's READDIRPLUS size: what Linux 6.1 asks for (one page).
    static let listingRequestSize = 4096

    private struct Completion {
        var slot: Int
        var error: Int32
        var node: UInt64
        var handle: UInt64
        /// READDIRPLUS: the last entry's offset, nil for an empty reply (the end).
        var lastOffset: UInt64?
    }

    /// Keeps `depth` operations in flight for `seconds`; each slot starts its next
    /// operation as soon as its previous one (all of its steps) completes.
    func run(_ operation: Operation, depth: Int, seconds: Double, paceMicroseconds: Int = 0) -> CellResult {
        var result = CellResult(bytesPerOperation: operation.bytes)
        result.latencies.reserveCapacity(1 << 20)
        let fillByte: UInt8 = 0xa5
        for slot in 0..<depth {
            let area = fuse.payload(slot: slot)
            area.baseAddress?.initializeMemory(as: UInt8.self, repeating: fillByte, count: area.count)
        }
        var states = [SlotState](repeating: SlotState(), count: depth)
        var counter = 0
        var requests = 0
        var completions: [Completion] = []
        completions.reserveCapacity(depth)

        func issue(_ slot: Int) throws(FrontendError) {
            let s = states[slot]
            let request: FuseRequest
            switch (operation, s.step) {
            case (.getattr, _): request = .getattr(node: statNode)
            case (.lookupForget, 0): request = .lookup(parent: UInt64(FUSE_ROOT_ID), name: Fixture.statFile)
            case (.lookupForget, _): request = .forget(node: s.node, lookups: 1)
            case (.read4k, _), (.read1m, _):
                let size = operation.bytes
                request = .read(node: readNode, handle: readHandle, offset: Fixture.offset(counter, size: size), size: UInt32(size))
            case (.write4k, _), (.write1m, _):
                let size = operation.bytes
                request = .write(node: writeNode, handle: writeHandle, offset: Fixture.offset(counter, size: size), size: UInt32(size))
            case (.createCycle, 0): request = .create(parent: UInt64(FUSE_ROOT_ID), name: s.name, flags: O_RDWR | O_CREAT | O_EXCL, mode: 0o644)
            case (.createCycle, 1): request = .write(node: s.node, handle: s.handle, offset: 0, size: 4096)
            case (.createCycle, 2): request = .release(node: s.node, handle: s.handle, flags: O_RDWR)
            case (.createCycle, 3): request = .unlink(parent: UInt64(FUSE_ROOT_ID), name: s.name)
            case (.createCycle, _): request = .forget(node: s.node, lookups: 1)
            case (.readdirplus, 0):
                request = .raw(opcode: FUSE_OPENDIR.rawValue, node: listNode,
                               body: Self.bytes(of: fuse_open_in(flags: UInt32(O_RDONLY), open_flags: 0)),
                               replyCapacity: MemoryLayout<fuse_open_out>.size)
            case (.readdirplus, 1):
                var body = fuse_read_in()
                body.fh = s.handle
                body.offset = s.offset
                body.size = UInt32(Self.listingRequestSize)
                request = .raw(opcode: FUSE_READDIRPLUS.rawValue, node: listNode, body: Self.bytes(of: body),
                               replyCapacity: Self.listingRequestSize)
            case (.readdirplus, _):
                var body = fuse_release_in()
                body.fh = s.handle
                request = .raw(opcode: FUSE_RELEASEDIR.rawValue, node: listNode, body: Self.bytes(of: body), replyCapacity: 64)
            }
            requests += 1
            counter += 1
            try fuse.start(request, slot: slot)
        }

        func begin(_ slot: Int) throws(FrontendError) {
            states[slot] = SlotState(step: 0, started: Sys.monotonicNanoseconds(), name: "c\(slot)-\(counter)")
            try issue(slot)
        }

        let stepsPerOperation: Int
        switch operation {
        case .lookupForget: stepsPerOperation = 2
        case .createCycle: stepsPerOperation = 5
        case .readdirplus: stepsPerOperation = 3
        default: stepsPerOperation = 1
        }

        let ticksBefore = treeCPUTicks(daemon.pid)
        let start = Sys.monotonicNanoseconds()
        let deadline = start + UInt64(seconds * 1e9)
        do throws(FrontendError) {
            for slot in 0..<depth { try begin(slot) }
            while fuse.inFlight > 0 {
                completions.removeAll(keepingCapacity: true)
                try fuse.waitCompletions(timeoutMilliseconds: 10_000) { reply in
                    var c = Completion(slot: reply.slot, error: reply.error, node: 0, handle: 0)
                    if reply.opcode == FUSE_OPENDIR.rawValue, let open = reply.decode(fuse_open_out.self) {
                        c.handle = open.fh
                    } else if reply.opcode == FUSE_READDIRPLUS.rawValue {
                        c.lastOffset = Self.lastOffset(reply.payload)
                    } else if reply.opcode == FUSE_LOOKUP.rawValue, let entry = reply.decode(fuse_entry_out.self) {
                        c.node = entry.nodeid
                    } else if reply.opcode == FUSE_CREATE.rawValue, let entry = reply.decode(fuse_entry_out.self),
                              reply.payload.count >= MemoryLayout<fuse_entry_out>.size + MemoryLayout<fuse_open_out>.size {
                        c.node = entry.nodeid
                        c.handle = reply.payload.loadUnaligned(fromByteOffset: MemoryLayout<fuse_entry_out>.size, as: fuse_open_out.self).fh
                    }
                    completions.append(c)
                }
                let now = Sys.monotonicNanoseconds()
                for c in completions {
                    if c.error != 0 {
                        throw FrontendError.fuse(opcode: UInt32(states[c.slot].step), error: c.error)
                    }
                    if c.node != 0 { states[c.slot].node = c.node }
                    if c.handle != 0 { states[c.slot].handle = c.handle }
                    if operation == .readdirplus && states[c.slot].step == 1, let last = c.lastOffset {
                        // More entries may follow: READDIRPLUS again from the last one.
                        states[c.slot].offset = last
                        try issue(c.slot)
                        continue
                    }
                    states[c.slot].step += 1
                    if states[c.slot].step < stepsPerOperation {
                        try issue(c.slot)
                    } else {
                        result.operations += 1
                        result.latencies.append(now &- states[c.slot].started)
                        if paceMicroseconds > 0 { Sys.sleep(nanoseconds: paceMicroseconds * 1000) }
                        if now < deadline { try begin(c.slot) }
                    }
                }
            }
        } catch {
            if case .fuse(let step, let errno) = error {
                result.error = "\(operation.rawValue): step \(step + 1) failed with errno \(-errno)"
            } else {
                result.error = "\(operation.rawValue): \(error)"
            }
        }
        result.seconds = Double(Sys.monotonicNanoseconds() - start) / 1e9
        result.requests = requests
        result.cpuTicks = treeCPUTicks(daemon.pid) - ticksBefore
        return result
    }

    static func bytes<T>(of value: T) -> [UInt8] {
        withUnsafeBytes(of: value) { Array($0) }
    }

    /// The offset of the last entry of a READDIRPLUS reply; nil when it holds none.
    static func lastOffset(_ payload: UnsafeRawBufferPointer) -> UInt64? {
        let entrySize = MemoryLayout<fuse_entry_out>.size
        let direntSize = MemoryLayout<fuse_dirent>.size
        var position = 0
        var last: UInt64?
        while position + entrySize + direntSize <= payload.count {
            let dirent = payload.loadUnaligned(fromByteOffset: position + entrySize, as: fuse_dirent.self)
            last = dirent.off
            position += (entrySize + direntSize + Int(dirent.namelen) + 7) & ~7
        }
        return last
    }
}
