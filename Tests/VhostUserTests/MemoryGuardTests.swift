import XCTest
import Glibc
import CVirtioFS
import Posix
@testable import VhostUser

/// What the memory table accepts from the frontend, and the SIGBUS guard over it.
final class MemoryGuardTests: XCTestCase {
    private func region(_ size: UInt64, offset: UInt64 = 0) -> MemoryRegionDescription {
        MemoryRegionDescription(guestPhysicalAddress: 0x10_0000, size: size, userspaceAddress: 0x7f00_0000_0000, mmapOffset: offset)
    }

    private func memfd(_ size: Int, seals: Int32 = 0) throws -> Int32 {
        let fd = try Sys.memfdCreate("guard-test", flags: CVFS_MFD_CLOEXEC | CVFS_MFD_ALLOW_SEALING)
        try Sys.ftruncate(fd, Int64(size))
        if seals != 0 { try Sys.addFileSeals(fd, seals) }
        return fd
    }

    func testRegionShrunkAfterMappingReadsZeroAndIsReportedInsteadOfSIGBUS() throws {
        let fd = try memfd(1 << 16)
        defer { Sys.close(fd) }
        let notify = try Sys.eventfd(flags: CVFS_EFD_CLOEXEC | CVFS_EFD_NONBLOCK)
        defer { Sys.close(notify) }
        let memory = try GuestMemory(regions: [region(1 << 16)], fds: [fd], faultNotifyFD: notify)
        XCTAssertEqual(memory.unsealedRegionCount, 1)
        let p = try XCTUnwrap(memory.translate(guestAddress: 0x10_0000 + 0x8000, length: 8))
        p.storeBytes(of: 0x1122_3344_5566_7788 as UInt64, as: UInt64.self)
        let before = Sys.guardedFaultsRepaired
        // The frontend takes the pages away: without the guard the next load kills the process.
        try Sys.ftruncate(fd, 0)
        XCTAssertEqual(p.load(as: UInt64.self), 0)
        p.storeBytes(of: 7 as UInt64, as: UInt64.self)
        XCTAssertEqual(p.load(as: UInt64.self), 7, "the repaired page is ordinary memory")
        XCTAssertEqual(Sys.guardedFaultsRepaired, before + 1)
        XCTAssertEqual(try Sys.eventfdDrain(notify), 1, "the owner hears of the fault")
    }

    func testGuardIsRemovedWithTheMapping() throws {
        let fd = try memfd(1 << 16)
        defer { Sys.close(fd) }
        let notify = try Sys.eventfd(flags: CVFS_EFD_CLOEXEC | CVFS_EFD_NONBLOCK)
        defer { Sys.close(notify) }
        // More tables than the guard has slots: each one's slot is freed when it goes away.
        for _ in 0..<(Int(CVFS_MEMGUARD_SLOTS) + 8) {
            _ = try GuestMemory(regions: [region(1 << 16)], fds: [fd], faultNotifyFD: notify)
        }
    }

    func testSealedMemfdIsAcceptedAndKnownSealed() throws {
        let fd = try memfd(1 << 16, seals: CVFS_F_SEAL_SHRINK | CVFS_F_SEAL_GROW | CVFS_F_SEAL_SEAL)
        defer { Sys.close(fd) }
        let memory = try GuestMemory(regions: [region(1 << 16)], fds: [fd])
        XCTAssertEqual(memory.unsealedRegionCount, 0)
        XCTAssertNotNil(memory.translate(guestAddress: 0x10_0000, length: 1 << 16))
    }

    func testRegionPastTheEndOfItsFileIsRefused() throws {
        let fd = try memfd(1 << 16)
        defer { Sys.close(fd) }
        XCTAssertThrowsError(try GuestMemory(regions: [region(1 << 16, offset: 4096)], fds: [fd])) { error in
            XCTAssertTrue("\(error)".contains("past the end of its file"), "\(error)")
        }
    }

    func testDescriptorsThatCannotBackMemoryAreRefusedByKind() throws {
        var pipeFDs: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&pipeFDs), 0)
        defer { pipeFDs.forEach(Sys.close) }
        let event = try Sys.eventfd()
        defer { Sys.close(event) }
        let (a, b) = try Sys.unixStreamSocketPair()
        defer { Sys.close(a); Sys.close(b) }
        let directory = try Sys.openat(AT_FDCWD, "/", O_RDONLY | O_DIRECTORY)
        defer { Sys.close(directory) }
        for (fd, kind) in [(pipeFDs[0], "a pipe"), (event, "an anonymous inode"), (a, "a socket"), (directory, "a directory")] {
            XCTAssertThrowsError(try GuestMemory(regions: [region(1 << 16)], fds: [fd]), kind) { error in
                XCTAssertTrue("\(error)".contains("its file descriptor is \(kind)"), "\(error)")
            }
        }
    }

    func testSIGBUSOutsideGuardedMemoryIsStillACrash() throws {
        // Installs the guard in this process, as a backend's first memory table does.
        // (The "Program crashed: Bus error" report printed during this test is the child's.)
        let guardedFD = try memfd(1 << 16)
        defer { Sys.close(guardedFD) }
        let notify = try Sys.eventfd(flags: CVFS_EFD_CLOEXEC | CVFS_EFD_NONBLOCK)
        defer { Sys.close(notify) }
        let memory = try GuestMemory(regions: [region(1 << 16)], fds: [guardedFD], faultNotifyFD: notify)
        XCTAssertEqual(memory.regionCount, 1)
        // A shared mapping that is not guest memory, then its file shrinks.
        let fd = try memfd(1 << 16)
        defer { Sys.close(fd) }
        let p = try Sys.mmapShared(fd, length: 1 << 16, offset: 0)
        defer { Sys.munmap(p, length: 1 << 16) }
        try Sys.ftruncate(fd, 0)
        let child = try Sys.fork()
        if child == 0 {
            // Only async-signal-safe work here: touch the lost page, and report survival.
            let value = p.load(fromByteOffset: 0x4000, as: UInt8.self)
            _exit(value == 0 ? 3 : 4)
        }
        var status: Int32? = nil
        for _ in 0..<1000 {
            status = try Sys.waitProcess(child, block: false)
            if status != nil { break }
            Sys.sleep(nanoseconds: 10_000_000)
        }
        guard let status else {
            try? Sys.signalProcess(child, SIGKILL)
            _ = try? Sys.waitProcess(child, block: true)
            return XCTFail("the child neither crashed nor exited")
        }
        XCTAssertEqual(ProcessExit(waitStatus: status), .signalled(SIGBUS), "a SIGBUS outside guest memory keeps its old disposition")
    }
}
