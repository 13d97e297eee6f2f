import XCTest
import CVirtioFS
@testable import VhostUser

/// The ring flags and feature bits come from the kernel's headers (and, for
/// vhost-user's own bits, from one C declaration); these pin them to the values
/// the virtio 1.x and vhost-user specifications give, so a header mix-up shows.
final class ProtocolConstantsTests: XCTestCase {
    func testRingFlagsMatchTheVirtioSpecification() {
        XCTAssertEqual(CVFS_VRING_DESC_F_NEXT, 1)
        XCTAssertEqual(CVFS_VRING_DESC_F_WRITE, 2)
        XCTAssertEqual(CVFS_VRING_DESC_F_INDIRECT, 4)
        XCTAssertEqual(CVFS_VRING_USED_F_NO_NOTIFY, 1)
        XCTAssertEqual(CVFS_VRING_AVAIL_F_NO_INTERRUPT, 1)
        XCTAssertEqual(SplitQueue.descriptorFlagNext, 1)
        XCTAssertEqual(SplitQueue.descriptorFlagWrite, 2)
        XCTAssertEqual(SplitQueue.descriptorFlagIndirect, 4)
        XCTAssertEqual(SplitQueue.availableFlagNoInterrupt, 1)
    }

    func testVirtioFeatureMasksMatchTheirBitNumbers() {
        XCTAssertEqual(VirtioFeatures.ringIndirectDescriptors, 1 << 28)
        XCTAssertEqual(VirtioFeatures.ringEventIndex, 1 << 29)
        XCTAssertEqual(VirtioFeatures.protocolFeatures, 1 << 30)
        XCTAssertEqual(VirtioFeatures.version1, 1 << 32)
        XCTAssertEqual(VirtioFeatures.logAll, 1 << 26, "VHOST_F_LOG_ALL")
        XCTAssertEqual(VirtioFeatures.offered, 0x1_7400_0000)
    }

    func testVhostUserProtocolFeatureBitsMatchTheSpecification() {
        let bits: [(cvfs_vhost_user_protocol_feature, UInt32)] = [
            (CVFS_VHOST_USER_PROTOCOL_F_MQ, 0), (CVFS_VHOST_USER_PROTOCOL_F_LOG_SHMFD, 1),
            (CVFS_VHOST_USER_PROTOCOL_F_RARP, 2), (CVFS_VHOST_USER_PROTOCOL_F_REPLY_ACK, 3),
            (CVFS_VHOST_USER_PROTOCOL_F_NET_MTU, 4), (CVFS_VHOST_USER_PROTOCOL_F_BACKEND_REQ, 5),
            (CVFS_VHOST_USER_PROTOCOL_F_CROSS_ENDIAN, 6), (CVFS_VHOST_USER_PROTOCOL_F_CRYPTO_SESSION, 7),
            (CVFS_VHOST_USER_PROTOCOL_F_PAGEFAULT, 8), (CVFS_VHOST_USER_PROTOCOL_F_CONFIG, 9),
            (CVFS_VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD, 10), (CVFS_VHOST_USER_PROTOCOL_F_HOST_NOTIFIER, 11),
            (CVFS_VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD, 12), (CVFS_VHOST_USER_PROTOCOL_F_RESET_DEVICE, 13),
            (CVFS_VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS, 14), (CVFS_VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS, 15),
            (CVFS_VHOST_USER_PROTOCOL_F_STATUS, 16), (CVFS_VHOST_USER_PROTOCOL_F_XEN_MMAP, 17),
            (CVFS_VHOST_USER_PROTOCOL_F_SHARED_OBJECT, 18), (CVFS_VHOST_USER_PROTOCOL_F_DEVICE_STATE, 19),
        ]
        for (feature, bit) in bits {
            XCTAssertEqual(feature.rawValue, bit)
            XCTAssertEqual(cvfs_vhost_user_protocol_mask(feature), 1 << UInt64(bit))
        }
        XCTAssertEqual(ProtocolFeatures.multiQueue, 1 << 0)
        XCTAssertEqual(ProtocolFeatures.replyAck, 1 << 3)
        XCTAssertEqual(ProtocolFeatures.backendRequests, 1 << 5)
        XCTAssertEqual(ProtocolFeatures.resetDevice, 1 << 13)
        XCTAssertEqual(ProtocolFeatures.configureMemorySlots, 1 << 15)
        XCTAssertEqual(ProtocolFeatures.logSharedMemory, 1 << 1)
        XCTAssertEqual(ProtocolFeatures.deviceState, 1 << 19)
        XCTAssertEqual(ProtocolFeatures.offered, 0x8_a02b)
    }
}
