#if canImport(Glibc)
import Glibc
#endif
import Posix

/// The body of the probe's worker thread. It lives outside main.swift: a closure written
/// in top-level code is main-actor isolated, and Swift 6 checks that at run time (a trap
/// on any other thread).
func probeThreadBody(_: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    var words: [String: Int] = [:]
    for i in 0..<1000 { words["w\(i % 97)", default: 0] += i }
    let logger = Logger(label: "probe-thread", level: .debug)
    logger.debug("thread worked on \(words.count) words, random \(UInt64.random(in: 0...9))")
    return nil
}
