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

/// The read end the early thread waits on before making its forbidden call.
nonisolated(unsafe) var earlyThreadGo: Int32 = -1

/// A thread started before the filter is loaded: once told to go, it makes a call that
/// is on no allow-list, to show the filter reached it too.
func earlyThreadBody(_: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    var byte: UInt8 = 0
    _ = read(earlyThreadGo, &byte, 1)
    _ = getppid()
    let text = "early-thread-returned\n"
    _ = text.withCString { write(1, $0, strlen($0)) }
    return nil
}
