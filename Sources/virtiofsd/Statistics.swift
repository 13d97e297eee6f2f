#if canImport(Glibc)
import Glibc
#endif
import FUSE
import Passthrough
import Posix
import Synchronization

/// Per-queue counters kept by the queue handler: requests handled, requests being
/// handled now (more than one only with a thread pool), and the most ever at once.
final class QueueCounters: @unchecked Sendable {
    // Safety: allocated in init, freed in deinit, reached only as Atomic<UInt64>.
    static let slots = 17  // hiprio + 16 request queues
    let counters: UnsafeMutablePointer<Atomic<UInt64>>

    init() {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: Self.slots * 3 * 8, alignment: 64)
        raw.initializeMemory(as: UInt64.self, repeating: 0, count: Self.slots * 3)
        counters = raw.assumingMemoryBound(to: Atomic<UInt64>.self)
    }

    deinit { UnsafeMutableRawPointer(counters).deallocate() }

    @inline(__always)
    func begin(_ queue: Int) {
        let q = min(max(queue, 0), Self.slots - 1) * 3
        (counters + q).pointee.wrappingAdd(1, ordering: .relaxed)
        let now = (counters + q + 1).pointee.wrappingAdd(1, ordering: .relaxed).newValue
        if now > (counters + q + 2).pointee.load(ordering: .relaxed) {
            (counters + q + 2).pointee.max(now, ordering: .relaxed)
        }
    }

    @inline(__always)
    func end(_ queue: Int) {
        let q = min(max(queue, 0), Self.slots - 1) * 3
        (counters + q + 1).pointee.wrappingSubtract(1, ordering: .relaxed)
    }

    /// (queue, requests, in flight, peak in flight) for every queue that saw a request.
    func snapshot() -> [(queue: Int, requests: UInt64, inFlight: UInt64, peak: UInt64)] {
        (0..<Self.slots).compactMap { i in
            let requests = (counters + i * 3).pointee.load(ordering: .relaxed)
            guard requests > 0 else { return nil }
            return (i, requests, (counters + i * 3 + 1).pointee.load(ordering: .relaxed),
                    (counters + i * 3 + 2).pointee.load(ordering: .relaxed))
        }
    }
}

/// The statistics text: one record per line, a key and then name/value pairs, all
/// separated by single spaces (format described in docs/operations.md, "Statistics").
func statisticsText(_ requests: StatisticsSnapshot, queues: QueueCounters?,
                    open: (inodes: Int, openFiles: Int, inodeDescriptors: Int)?) -> String {
    var lines = ["virtiofsd-statistics 1",
                 "uptime_ms \(requests.uptimeNanoseconds / 1_000_000)",
                 "requests \(requests.requests)",
                 "errors \(requests.failedRequests)"]
    if let open {
        lines.append("inodes \(open.inodes)")
        lines.append("open_files \(open.openFiles)")
        lines.append("inode_fds \(open.inodeDescriptors)")
    }
    for q in queues?.snapshot() ?? [] {
        lines.append("queue \(q.queue) requests \(q.requests) in_flight \(q.inFlight) peak_in_flight \(q.peak)")
    }
    for op in requests.operations {
        let us = { (f: Double) in op.percentile(f) / 1000 }
        lines.append("op \(op.name) requests \(op.count) errors \(op.errors) "
                     + "p50_us \(us(0.5)) p90_us \(us(0.9)) p99_us \(us(0.99)) max_us \(us(1.0))")
    }
    for (name, count) in requests.errors {
        lines.append("errno \(name) \(count)")
    }
    return lines.joined(separator: "\n") + "\n"
}

/// Serves the statistics: on SIGUSR1 into the log, and to each connection on the
/// `--stats` socket, from one thread. The socket was bound before the sandbox; the kept
/// listening descriptor is what makes it reachable after pivot_root hid its path.
final class StatisticsReporter: Sendable {
    let text: @Sendable () -> String
    let logger: Logger
    let listenFD: Int32?
    let usr1FD: Int32
    let stopFD: Int32

    init(listenFD: Int32?, usr1FD: Int32, logger: Logger, text: @escaping @Sendable () -> String) throws(Errno) {
        self.listenFD = listenFD
        self.usr1FD = usr1FD
        self.logger = logger
        self.text = text
        stopFD = try Sys.eventfd()
    }

    /// Logs the statistics, one info line per record.
    func dump(_ why: String) {
        logger.info("statistics (\(why)):")
        for line in text().split(separator: "\n") { logger.info("  \(line)") }
    }

    func start() throws(Errno) -> pthread_t {
        try Sys.startThread { [self] in run() }
    }

    func stop(_ thread: pthread_t) {
        try? Sys.eventfdSignal(stopFD)
        Sys.joinThread(thread)
    }

    private func run() {
        var fds = [usr1FD, stopFD]
        if let listenFD { fds.append(listenFD) }
        while true {
            guard let ready = try? Sys.pollReadable(fds, timeoutMilliseconds: -1) else { return }
            if ready[1] != 0 { return }
            if ready[0] != 0 {
                _ = try? Signals.readSignal(usr1FD)
                dump("SIGUSR1")
            }
            if ready.count > 2, ready[2] != 0, let listenFD, let client = try? Sys.accept(listenFD) {
                var body = text()
                body.withUTF8 { _ = try? Sys.sendAll(client, UnsafeRawBufferPointer($0)) }
                Sys.close(client)
            }
        }
    }
}
