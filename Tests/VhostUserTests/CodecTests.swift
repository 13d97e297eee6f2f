import XCTest
import Glibc
import CVirtioFS
import Posix
@testable import VhostUser

final class CodecTests: XCTestCase {
    var frontend: FakeFrontend!
    var backendSocket: Int32 = -1
    let codec = MessageCodec(queueCount: 2, maxQueueSize: 1024)

    override func setUpWithError() throws {
        let (a, b) = try Sys.unixStreamSocketPair()
        frontend = FakeFrontend(socket: a)
        backendSocket = b
    }

    override func tearDown() {
        Sys.close(frontend.socket)
        Sys.close(backendSocket)
    }

    private func eventfd() -> Int32 { (try? Sys.eventfd()) ?? -1 }

    private func expectError(_ expected: VhostUserError, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try codec.receive(from: backendSocket), file: file, line: line) { error in
            XCTAssertEqual(error as? VhostUserError, expected, file: file, line: line)
        }
    }

    func testDecodesRequestsQEMUSends() throws {
        let kick = eventfd()
        defer { Sys.close(kick) }
        frontend.send(.getFeatures)
        XCTAssertEqual(try codec.receive(from: backendSocket)?.request, .getFeatures)
        frontend.send(.setFeatures, needReply: true, payload: le(UInt64(1 << 32)))
        let m = try codec.receive(from: backendSocket)
        XCTAssertEqual(m?.request, .setFeatures(1 << 32))
        XCTAssertEqual(m?.needsReply, true)
        frontend.send(.setVringNum, payload: le(UInt32(1)) + le(UInt32(256)))
        XCTAssertEqual(try codec.receive(from: backendSocket)?.request, .setVringNum(queue: 1, size: 256))
        frontend.send(.setVringAddr, payload: le(UInt32(0)) + le(UInt32(0)) + le(UInt64(0x1000)) + le(UInt64(0x3000)) + le(UInt64(0x2000)) + le(UInt64(0)))
        XCTAssertEqual(try codec.receive(from: backendSocket)?.request,
                       .setVringAddr(queue: 0, VringAddresses(descriptorTable: 0x1000, usedRing: 0x3000, availableRing: 0x2000)))
        frontend.send(.setVringCall, payload: le(UInt64(1 | 0x100)))
        XCTAssertEqual(try codec.receive(from: backendSocket)?.request, .setVringCall(queue: 1, fd: nil))
        frontend.send(.setVringKick, payload: le(UInt64(1)), fds: [kick])
        guard case .setVringKick(1, let received?)? = try codec.receive(from: backendSocket)?.request else {
            return XCTFail("expected a kick fd")
        }
        XCTAssertEqual(try Sys.fstat(received).st_ino, try Sys.fstat(kick).st_ino)
        Sys.close(received)
        let region = MemoryRegionDescription(guestPhysicalAddress: 0, size: 0x1000, userspaceAddress: 0x5000, mmapOffset: 0)
        frontend.send(.setMemTable, payload: le(UInt32(2)) + le(UInt32(0)) + regionPayload(region) + regionPayload(region), fds: [kick, kick])
        guard case .setMemTable(let regions, let fds)? = try codec.receive(from: backendSocket)?.request else {
            return XCTFail("expected a memory table")
        }
        XCTAssertEqual(regions, [region, region])
        XCTAssertEqual(fds.count, 2)
        fds.forEach(Sys.close)
        frontend.send(.remMemReg, payload: le(UInt64(0)) + regionPayload(region))
        XCTAssertEqual(try codec.receive(from: backendSocket)?.request, .remMemReg(region))
        frontend.send(.setStatus, payload: le(UInt64(0xf)))
        XCTAssertEqual(try codec.receive(from: backendSocket)?.request, .setStatus(0xf))
        frontend.send(.getConfig, payload: le(UInt32(0)) + le(UInt32(4)) + le(UInt32(0)) + [0, 0, 0, 0])
        XCTAssertEqual(try codec.receive(from: backendSocket)?.request, .getConfig(offset: 0, size: 4, flags: 0))
    }

    func testPeerClosingBetweenMessagesIsNil() throws {
        Sys.close(frontend.socket)
        frontend = FakeFrontend(socket: try Sys.unixStreamSocket())
        XCTAssertNil(try codec.receive(from: backendSocket))
    }

    func testMalformedMessagesNameWhatWasWrongAndCloseFDs() throws {
        let fd = eventfd()
        defer { Sys.close(fd) }
        let region = regionPayload(MemoryRegionDescription(guestPhysicalAddress: 0, size: 0x1000, userspaceAddress: 0, mmapOffset: 0))
        let state = { (q: UInt32, n: UInt32) in le(q) + le(n) }
        let baseline = openFDCount()

        frontend.send(.setFeatures, payload: le(UInt32(1)))
        expectError(.payloadSize(request: "SET_FEATURES", expected: "8", actual: 4))
        frontend.send(99, payload: [])
        expectError(.unknownRequest(99))
        frontend.send(99, payload: le(UInt64(0)), fds: [fd])
        expectError(.unknownRequest(99))
        frontend.send(RequestCode.getFeatures.rawValue, flags: 2)
        expectError(.badVersion(flags: 2))
        frontend.send(.setVringKick, payload: le(UInt64(0)))
        expectError(.fdCount(request: "SET_VRING_KICK", expected: "1", actual: 0))
        frontend.send(.setVringCall, payload: le(UInt64(0x100)), fds: [fd])
        expectError(.fdCount(request: "SET_VRING_CALL", expected: "0", actual: 1))
        frontend.send(.getFeatures, fds: [fd])
        expectError(.fdCount(request: "GET_FEATURES", expected: "0", actual: 1))
        frontend.send(.setMemTable, payload: le(UInt32(1)) + le(UInt32(0)) + region, fds: [fd, fd])
        expectError(.fdCount(request: "SET_MEM_TABLE", expected: "1", actual: 2))
        frontend.send(.setMemTable, payload: le(UInt32(9)) + le(UInt32(0)) + Array(repeating: region, count: 9).flatMap { $0 })
        expectError(.tooManyRegions(count: 9, limit: 8))
        frontend.send(.setMemTable, payload: le(UInt32(2)) + le(UInt32(0)) + region, fds: [fd, fd])
        expectError(.payloadSize(request: "SET_MEM_TABLE", expected: "72", actual: 40))
        frontend.send(.addMemReg, payload: le(UInt64(0)) + region)
        expectError(.fdCount(request: "ADD_MEM_REG", expected: "1", actual: 0))
        for size: UInt32 in [0, 3, 2048, 65536] {
            frontend.send(.setVringNum, payload: state(0, size))
            expectError(.badQueueSize(queue: 0, size: size))
        }
        frontend.send(.setVringNum, payload: state(2, 8))
        expectError(.queueIndexOutOfRange(request: "SET_VRING_NUM", index: 2, queueCount: 2))
        frontend.send(.setVringKick, payload: le(UInt64(5)), fds: [fd])
        expectError(.queueIndexOutOfRange(request: "SET_VRING_KICK", index: 5, queueCount: 2))
        frontend.send(.setVringAddr, payload: le(UInt32(7)) + Array(repeating: 0, count: 36))
        expectError(.queueIndexOutOfRange(request: "SET_VRING_ADDR", index: 7, queueCount: 2))
        frontend.send(.setVringBase, payload: state(0, 0x10000))
        expectError(.payloadSize(request: "SET_VRING_BASE", expected: "a 16-bit ring index", actual: 8))
        frontend.send(.getConfig, payload: le(UInt32(0)) + le(UInt32(300)) + le(UInt32(0)) + Array(repeating: 0, count: 300))
        expectError(.payloadSize(request: "GET_CONFIG", expected: "12 + 300 (at most 256)", actual: 312))
        frontend.send(RequestCode.getFeatures.rawValue, flags: 1, payload: Array(repeating: 0, count: 5000))
        expectError(.payloadTooLarge(request: 1, size: 5000))

        XCTAssertEqual(openFDCount(), baseline, "every received fd was closed")
    }

    func testEncodesRepliesWithReplyFlagAndVersion() {
        let bytes = MessageCodec.encodeReply(.getQueueNum, payload: MessageCodec.u64Payload(3))
        XCTAssertEqual(bytes, le(UInt32(17)) + le(UInt32(5)) + le(UInt32(8)) + le(UInt64(3)))
        XCTAssertEqual(MessageCodec.vringStatePayload(queue: 1, num: 7), le(UInt32(1)) + le(UInt32(7)))
    }
}
