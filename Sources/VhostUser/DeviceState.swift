#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import Posix

/// The device's internal state for migration (VHOST_USER_PROTOCOL_F_DEVICE_STATE):
/// what the guest relies on that is not in guest memory. The vhost-user layer only
/// moves the bytes; what they mean belongs to whoever implements this.
public protocol DeviceStateHandler: AnyObject, Sendable {
    /// The state to send, gathered with every queue stopped.
    func saveDeviceState() throws(DeviceStateError) -> [UInt8]
    /// Applies state received from the source, with every queue stopped.
    func loadDeviceState(_ bytes: [UInt8]) throws(DeviceStateError)
}

/// Why a device state could not be saved or restored; the frontend learns only
/// that it failed (CHECK_DEVICE_STATE), the log says why.
public struct DeviceStateError: Error, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// One state transfer through the fd of SET_DEVICE_STATE_FD, on its own thread:
/// the frontend reads (or writes) the other end only after our reply, so the
/// message thread must not wait on the pipe. CHECK_DEVICE_STATE joins it.
///
/// Synchronisation: `bytes` and `failure` are written by the transfer thread
/// before it exits and read by the message thread after pthread_join.
final class DeviceStateTransfer: @unchecked Sendable {
    /// The most state a load accepts: a bound on what a frontend can make us hold.
    /// 10,000 inodes take about 0.6 MB; this leaves room for a few million.
    static let maxLoadBytes = 256 << 20

    let save: Bool
    private var bytes: [UInt8]
    private var failure: String?
    private var thread: pthread_t?

    /// Save: writes `bytes` into `fd`, then closes it (the EOF ends the transfer).
    /// Load: reads `fd` until EOF. Takes ownership of `fd`.
    init(save: Bool, fd: Int32, bytes: [UInt8]) throws(VhostUserError) {
        self.save = save
        self.bytes = bytes
        do {
            thread = try Sys.startThread { [self] in
                if save { send(fd) } else { receive(fd) }
                Sys.close(fd)
            }
        } catch {
            Sys.close(fd)
            throw .thread(error)
        }
    }

    /// A transfer that failed before it started (the fd is closed at once).
    init(failed why: String, save: Bool, fd: Int32) {
        self.save = save
        bytes = []
        failure = why
        Sys.close(fd)
    }

    private func send(_ fd: Int32) {
        let result = bytes.withUnsafeBytes { raw -> Errno? in
            do throws(Errno) { try Sys.writeAll(fd, raw) } catch { return error }
            return nil
        }
        if let result { failure = "writing the state: \(result)" }
    }

    private func receive(_ fd: Int32) {
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n: Int
            do {
                n = try chunk.withUnsafeMutableBytes { (raw) throws(Errno) -> Int in try Sys.read(fd, raw) }
            } catch {
                failure = "reading the state: \(error)"
                return
            }
            if n == 0 { return }
            guard bytes.count + n <= Self.maxLoadBytes else {
                failure = "the state is larger than \(Self.maxLoadBytes) bytes"
                bytes = []
                return
            }
            bytes.append(contentsOf: chunk[0..<n])
        }
    }

    /// Waits for the transfer; the bytes received (load) or the error.
    func finish() -> Result<[UInt8], DeviceStateError> {
        if let thread {
            pthread_join(thread, nil)
            self.thread = nil
        }
        if let failure { return .failure(DeviceStateError(failure)) }
        let received = bytes
        bytes = []
        return .success(received)
    }

    deinit { _ = finish() }
}

extension VhostUserBackend {
    /// SET_DEVICE_STATE_FD: starts the transfer; the reply says we use the frontend's fd.
    func startDeviceStateTransfer(save: Bool, phase: UInt32, fd: Int32) throws(VhostUserError) -> [UInt8] {
        // A transfer the frontend never checked is ended first.
        _ = transfer?.finish()
        transfer = nil
        let noFD = UInt64(CVFS_VHOST_USER_DEVICE_STATE_NO_FD)
        guard phase == UInt32(CVFS_VHOST_TRANSFER_STATE_PHASE_STOPPED) else {
            transfer = DeviceStateTransfer(failed: "migration phase \(phase) is not supported (only 0, stopped)", save: save, fd: fd)
            return MessageCodec.u64Payload(noFD | 1)
        }
        guard let deviceState else {
            transfer = DeviceStateTransfer(failed: "this device keeps no migratable state", save: save, fd: fd)
            return MessageCodec.u64Payload(noFD | 1)
        }
        // The state is only consistent with no request in flight.
        stopAllQueues()
        if save {
            let bytes: [UInt8]
            do throws(DeviceStateError) {
                bytes = try deviceState.saveDeviceState()
            } catch {
                logger.error("device state: cannot save: \(error)")
                transfer = DeviceStateTransfer(failed: error.description, save: true, fd: fd)
                return MessageCodec.u64Payload(noFD)
            }
            logger.info("device state: sending \(bytes.count) bytes")
            transfer = try DeviceStateTransfer(save: true, fd: fd, bytes: bytes)
        } else {
            transfer = try DeviceStateTransfer(save: false, fd: fd, bytes: [])
        }
        return MessageCodec.u64Payload(noFD)
    }

    /// CHECK_DEVICE_STATE: 0 when the transfer (and, on a load, restoring it) succeeded.
    func checkDeviceStateTransfer() -> [UInt8] {
        guard let current = transfer else {
            logger.error("device state: CHECK_DEVICE_STATE without a transfer")
            return MessageCodec.u64Payload(1)
        }
        transfer = nil
        switch current.finish() {
        case .failure(let error):
            logger.error("device state: transfer failed: \(error)")
            return MessageCodec.u64Payload(1)
        case .success(let bytes):
            guard !current.save else { return MessageCodec.u64Payload(0) }
            guard let deviceState else { return MessageCodec.u64Payload(1) }
            do throws(DeviceStateError) {
                try deviceState.loadDeviceState(bytes)
                logger.info("device state: restored from \(bytes.count) bytes")
                return MessageCodec.u64Payload(0)
            } catch {
                logger.error("device state: refused: \(error)")
                return MessageCodec.u64Payload(1)
            }
        }
    }

    /// SET_LOG_BASE: maps the new log and restarts the queues with it.
    func setDirtyLog(size: UInt64, offset: UInt64, fd: Int32) throws(VhostUserError) {
        defer { Sys.close(fd) }
        let bitmap = try DirtyBitmap(fd: fd, size: size, offset: offset, faultNotifyFD: faultFD)
        let running = runningQueues
        stopAllQueues()
        dirtyBitmap = bitmap
        for q in running { try startQueueIfReady(q) }
        logger.info("dirty log: \(size) bytes (covers \((size * 8 * DirtyBitmap.pageSize) >> 20) MiB of guest memory)")
    }

    /// The log a queue starting now writes to: only while LOG_ALL is acked.
    func queueDirtyLog(_ addresses: VringAddresses, memory: GuestMemory) -> QueueDirtyLog? {
        guard ackedFeatures & VirtioFeatures.logAll != 0, let dirtyBitmap else { return nil }
        return QueueDirtyLog(bitmap: dirtyBitmap, memory: memory,
                             usedRingGuestAddress: addresses.logUsedRing ? addresses.logGuestAddress : nil)
    }
}
