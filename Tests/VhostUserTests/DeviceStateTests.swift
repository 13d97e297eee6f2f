import XCTest
import Foundation
import Glibc
import Synchronization
import CVirtioFS
import Posix
@testable import VhostUser

/// A device state handler that returns fixed bytes and records what it is given.
final class FakeDeviceState: DeviceStateHandler {
    let saved: [UInt8]
    let loaded = Mutex<[[UInt8]]>([])
    let refuse: Bool

    init(saved: [UInt8], refuse: Bool = false) {
        self.saved = saved
        self.refuse = refuse
    }

    func saveDeviceState() throws(DeviceStateError) -> [UInt8] { saved }

    func loadDeviceState(_ bytes: [UInt8]) throws(DeviceStateError) {
        loaded.withLock { $0.append(bytes) }
        if refuse { throw DeviceStateError("refused by the test") }
    }
}

/// SET_LOG_BASE, SET_DEVICE_STATE_FD and CHECK_DEVICE_STATE as QEMU sends them.
final class DeviceStateTests: XCTestCase {
    /// More than a pipe holds: the backend must not write it before replying.
    static let big: [UInt8] = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
    static let noFD = UInt64(CVFS_VHOST_USER_DEVICE_STATE_NO_FD)

    func transferPayload(save: Bool) -> [UInt8] {
        le(UInt32(save ? CVFS_VHOST_TRANSFER_STATE_DIRECTION_SAVE : CVFS_VHOST_TRANSFER_STATE_DIRECTION_LOAD)) + le(UInt32(0))
    }

    func readAll(_ fd: Int32) -> [UInt8] {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { return out }
            out += chunk[0..<n]
        }
    }

    func testSaveWritesTheStateIntoTheFrontendsPipeAfterTheReply() throws {
        let serving = try ServingBackend()
        serving.backend.deviceState = FakeDeviceState(saved: Self.big)
        let f = serving.frontend
        let (r, w) = try Sys.pipe()
        defer { Sys.close(r) }
        f.send(.setDeviceStateFD, payload: transferPayload(save: true), fds: [w])
        Sys.close(w)
        XCTAssertEqual(f.receiveU64(.setDeviceStateFD), Self.noFD, "success, and no fd of our own")
        XCTAssertEqual(readAll(r), Self.big, "the whole state, then EOF")
        f.send(.checkDeviceState)
        XCTAssertEqual(f.receiveU64(.checkDeviceState), 0)
    }

    func testLoadReadsUntilEOFAndCheckReportsTheHandlersVerdict() throws {
        for refuse in [false, true] {
            let serving = try ServingBackend()
            let state = FakeDeviceState(saved: [], refuse: refuse)
            serving.backend.deviceState = state
            let f = serving.frontend
            let (r, w) = try Sys.pipe()
            f.send(.setDeviceStateFD, payload: transferPayload(save: false), fds: [r])
            Sys.close(r)
            XCTAssertEqual(f.receiveU64(.setDeviceStateFD), Self.noFD)
            try Self.big.withUnsafeBytes { try Sys.writeAll(w, $0) }
            Sys.close(w)
            f.send(.checkDeviceState)
            XCTAssertEqual(f.receiveU64(.checkDeviceState), refuse ? 1 : 0)
            XCTAssertEqual(state.loaded.withLock { $0 }, [Self.big])
        }
    }

    func testCheckWithoutATransferAndATransferWithoutAHandlerFail() throws {
        let serving = try ServingBackend()
        let f = serving.frontend
        f.send(.checkDeviceState)
        XCTAssertEqual(f.receiveU64(.checkDeviceState), 1)
        let (r, w) = try Sys.pipe()
        defer { Sys.close(r) }
        f.send(.setDeviceStateFD, payload: transferPayload(save: true), fds: [w])
        Sys.close(w)
        XCTAssertEqual(f.receiveU64(.setDeviceStateFD).map { $0 & 0xff }, 1, "no handler: an error at once")
        XCTAssertEqual(readAll(r), [], "and the pipe is closed")
        f.send(.checkDeviceState)
        XCTAssertEqual(f.receiveU64(.checkDeviceState), 1)
    }

    func testABadDirectionClosesTheConnection() throws {
        let serving = try ServingBackend()
        let (r, w) = try Sys.pipe()
        defer { Sys.close(r) }
        serving.frontend.send(.setDeviceStateFD, payload: le(UInt32(7)) + le(UInt32(0)), fds: [w])
        Sys.close(w)
        XCTAssertNil(serving.frontend.receive())
        serving.waitFinished()
    }

    func testSetLogBaseIsAnsweredAndALogPastItsFileClosesTheConnection() throws {
        let serving = try ServingBackend()
        let f = serving.frontend
        let fd = try Sys.memfdCreate("log")
        defer { Sys.close(fd) }
        try Sys.ftruncate(fd, 4096)
        f.send(.setLogBase, payload: le(UInt64(4096)) + le(UInt64(0)), fds: [fd])
        XCTAssertEqual(f.receiveU64(.setLogBase), 0, "QEMU waits for this reply with LOG_SHMFD")
        XCTAssertNotNil(serving.backend.dirtyBitmap)
        f.send(.setLogBase, payload: le(UInt64(8192)) + le(UInt64(0)), fds: [fd])
        XCTAssertNil(f.receive(), "a log reaching past its file is a frontend error")
        serving.waitFinished()
    }

    func testLoggingIsOfferedAndAnnounced() {
        XCTAssertNotEqual(VirtioFeatures.offered & VirtioFeatures.logAll, 0)
        XCTAssertNotEqual(ProtocolFeatures.offered & ProtocolFeatures.logSharedMemory, 0)
        XCTAssertNotEqual(ProtocolFeatures.offered & ProtocolFeatures.deviceState, 0)
    }
}
