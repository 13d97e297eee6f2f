#if canImport(Glibc)
import Glibc
#endif
import Posix
import Synchronization

/// Live request counters: per opcode a count, an error count and a log2 latency
/// histogram, and replies by errno. Fixed size (about 36 KiB), allocated once.
///
/// Cheap on the hot path: each request does a few relaxed atomic additions and two
/// reads of the monotonic clock; no lock. Readers take a `snapshot` whenever they like;
/// its numbers are each exact but not taken at one instant.
public final class RequestStatistics: @unchecked Sendable {
    // Safety: `counters` is allocated in init, freed in deinit, and only ever reached
    // through `Atomic<UInt64>` (relaxed), so any thread may add or read.

    /// Opcodes below this get their own slot; others (and unknown ones) share slot 0.
    public static let opcodeSlots = 64
    /// Errno values below this get their own slot; larger ones share the last.
    public static let errnoSlots = 136
    /// Latency buckets: bucket b counts requests that took [2^(b-1), 2^b) ns (b = 0: under 1 ns).
    public static let latencyBuckets = 40

    static let perOpcode = 2 + latencyBuckets                 // count, errors, histogram
    static let errnoBase = opcodeSlots * perOpcode
    static let total = errnoBase + errnoSlots

    let counters: UnsafeMutablePointer<Atomic<UInt64>>
    /// When counting started (monotonic ns), for the uptime line.
    public let started: UInt64
    /// When the last resource-limit warning was logged (monotonic ns; 0: never).
    let lastWarning = Atomic<UInt64>(0)

    public init() {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: Self.total * 8, alignment: 64)
        raw.initializeMemory(as: UInt64.self, repeating: 0, count: Self.total)
        counters = raw.assumingMemoryBound(to: Atomic<UInt64>.self)
        started = Sys.monotonicNanoseconds()
    }

    deinit { UnsafeMutableRawPointer(counters).deallocate() }

    @inline(__always)
    func add(_ index: Int) {
        (counters + index).pointee.wrappingAdd(1, ordering: .relaxed)
    }

    @inline(__always)
    func load(_ index: Int) -> UInt64 {
        (counters + index).pointee.load(ordering: .relaxed)
    }

    /// Counts one answered (or dropped) request: its opcode, 0 or the errno of its reply,
    /// and how long the dispatcher spent on it.
    @inline(__always)
    public func record(opcode: UInt32, errno: Int32, nanoseconds: UInt64) {
        let slot = opcode < UInt32(Self.opcodeSlots) ? Int(opcode) : 0
        let base = slot * Self.perOpcode
        add(base)
        if errno != 0 {
            add(base + 1)
            add(Self.errnoBase + min(max(Int(errno), 0), Self.errnoSlots - 1))
        }
        let bucket = min(UInt64.bitWidth - nanoseconds.leadingZeroBitCount, Self.latencyBuckets - 1)
        add(base + 2 + bucket)
    }

    /// True at most once per `interval` (default 10 s): whether to log a warning now.
    func claimWarning(now: UInt64, interval: UInt64 = 10_000_000_000) -> Bool {
        let last = lastWarning.load(ordering: .relaxed)
        guard last == 0 || now &- last >= interval else { return false }
        return lastWarning.compareExchange(expected: last, desired: max(now, 1), ordering: .relaxed).exchanged
    }

    /// The counters as they are now.
    public func snapshot() -> StatisticsSnapshot {
        var ops: [StatisticsSnapshot.Operation] = []
        for slot in 0..<Self.opcodeSlots {
            let base = slot * Self.perOpcode
            let count = load(base)
            guard count > 0 else { continue }
            let histogram = (0..<Self.latencyBuckets).map { load(base + 2 + $0) }
            let name = slot == 0 ? "OTHER" : (Opcode(rawValue: UInt32(slot))?.name ?? "OPCODE_\(slot)")
            ops.append(.init(name: name, count: count, errors: load(base + 1), latencyHistogram: histogram))
        }
        var errors: [(String, UInt64)] = []
        for e in 1..<Self.errnoSlots {
            let n = load(Self.errnoBase + e)
            if n > 0 { errors.append((e == Self.errnoSlots - 1 ? "E_OTHER" : errnoName(Errno(Int32(e))), n)) }
        }
        return StatisticsSnapshot(uptimeNanoseconds: Sys.monotonicNanoseconds() &- started,
                                  operations: ops, errors: errors)
    }
}

/// What `RequestStatistics.snapshot` saw.
public struct StatisticsSnapshot: Sendable {
    public struct Operation: Sendable {
        public var name: String
        public var count: UInt64
        public var errors: UInt64
        /// Index b counts requests that took [2^(b-1), 2^b) nanoseconds.
        public var latencyHistogram: [UInt64]

        /// The upper bound (ns) of the bucket holding the `fraction` quantile, e.g. 0.99.
        public func percentile(_ fraction: Double) -> UInt64 {
            let total = latencyHistogram.reduce(0, +)
            guard total > 0 else { return 0 }
            let wanted = UInt64((Double(total) * fraction).rounded(.up))
            var seen: UInt64 = 0
            for (bucket, n) in latencyHistogram.enumerated() {
                seen += n
                if seen >= max(wanted, 1) { return bucket == 0 ? 1 : UInt64(1) << UInt64(bucket) }
            }
            return UInt64(1) << UInt64(latencyHistogram.count)
        }
    }

    public var uptimeNanoseconds: UInt64
    public var operations: [Operation]
    /// (errno name, replies) for each errno that was answered at least once.
    public var errors: [(String, UInt64)]

    public var requests: UInt64 { operations.reduce(0) { $0 + $1.count } }
    public var failedRequests: UInt64 { operations.reduce(0) { $0 + $1.errors } }
}
