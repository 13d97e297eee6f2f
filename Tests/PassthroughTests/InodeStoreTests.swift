import XCTest
import Glibc
import Foundation
import FUSE
import Posix
@testable import Passthrough

/// The sharded inode table: one node per host identity, ids that name their shard,
/// and a bound on the number of nodes.
final class InodeStoreTests: XCTestCase {
    private func data(_ inode: UInt64, device: UInt64 = 7) -> InodeData {
        InodeData(key: InodeKey(device: device, inode: inode, mountID: 1), fileType: S_IFREG, handle: [0], mountFD: -1)
    }

    private let rootData = InodeData(key: InodeKey(device: 7, inode: 2, mountID: 1), fileType: S_IFDIR, handle: [0], mountFD: -1)

    func testOneNodePerKeyAndLookupsCount() throws {
        let store = InodeStore(root: rootData)
        let a = try store.referenceOrInsert(data(100))
        let again = try store.referenceOrInsert(data(100))
        XCTAssertEqual(a, again)
        XCTAssertEqual(store.lookups(a), 2)
        XCTAssertEqual(store.reference(rootData.key), rootNodeID, "the root is found by its key in whatever shard")
        XCTAssertNil(store.forget(a, count: 1))
        XCTAssertNotNil(store.forget(a, count: 1), "the last lookup drops the node")
        XCTAssertNil(store.data(a))
        XCTAssertEqual(store.count, 1)
    }

    func testIdsAreUniqueAcrossShardsAndNeverReused() throws {
        let store = InodeStore(root: rootData)
        var seen: Set<NodeID> = [rootNodeID]
        for inode in 1000..<3000 as Range<UInt64> {
            let id = try store.referenceOrInsert(data(inode))
            XCTAssertTrue(seen.insert(id).inserted, "id \(id) handed out twice")
            XCTAssertEqual(store.data(id)?.key.inode, inode)
            _ = store.forget(id, count: 1)
        }
        XCTAssertEqual(store.count, 1)
    }

    func testTheTableIsBoundedAndForgettingMakesRoom() throws {
        let store = InodeStore(root: rootData, maxNodes: 64)
        var ids: [NodeID] = []
        var refused = 0
        for inode in 1..<1000 as Range<UInt64> {
            do { ids.append(try store.referenceOrInsert(data(inode + 10))) } catch let error as Errno {
                XCTAssertEqual(error, Errno(ENFILE))
                refused += 1
            }
        }
        XCTAssertLessThanOrEqual(store.count, 65, "at most 4 per shard, plus the root")
        XCTAssertGreaterThan(refused, 900)
        for id in ids { _ = store.forget(id, count: 1) }
        XCTAssertNoThrow(try store.referenceOrInsert(data(5000)), "forgotten nodes free their room")
    }

    func testConcurrentLookupsAndForgetsBalance() throws {
        let store = InodeStore(root: rootData)
        let files = (100..<150 as Range<UInt64>).map { data($0) }
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for round in 0..<2000 {
                guard let id = try? store.referenceOrInsert(files[round % files.count]) else { continue }
                _ = store.forget(id, count: 1)
            }
        }
        XCTAssertEqual(store.count, 1, "every lookup was forgotten")
    }
}
