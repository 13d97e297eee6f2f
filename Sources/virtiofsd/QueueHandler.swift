import FUSE
import VhostUser

// The vhost-user chain views already have exactly the members the FUSE
// transport protocols ask for; these conformances connect the two layers
// without either knowing the other.
extension ChainReader: FuseReader {}
extension ChainWriter: FuseWriter {}

/// Hands each descriptor chain of every queue (hiprio included) to the FUSE dispatcher.
struct FUSEQueueHandler<FS: FileSystem>: VirtqueueHandler {
    let server: Server<FS>
    let queues: QueueCounters

    func handle(queueIndex: Int, reader: inout ChainReader, writer: inout ChainWriter) -> UInt32 {
        queues.begin(queueIndex)
        defer { queues.end(queueIndex) }
        return UInt32(truncatingIfNeeded: server.handle(&reader, &writer, queue: queueIndex))
    }
}

extension ChainWriter {
    /// A chain's late reply, as the FUSE layer asks for it.
    public mutating func detach() -> (any LateReply)? {
        detachReply().map(ChainReply.init)
    }
}

/// Connects a vhost-user late reply destination to the FUSE layer's protocol.
private final class ChainReply: LateReply {
    let destination: any LateReplyDestination
    init(_ destination: any LateReplyDestination) { self.destination = destination }
    func send(_ reply: UnsafeRawBufferPointer) -> Bool { destination.send(reply) }
}
