import FUSE
import Passthrough
import VhostUser

/// Connects the vhost-user device state messages to the FUSE session and the
/// passthrough filesystem: the bytes are `MigrationCodec`'s (docs/migration.md).
final class MigrationStateHandler: DeviceStateHandler {
    let server: Server<PassthroughFileSystem>

    init(server: Server<PassthroughFileSystem>) {
        self.server = server
    }

    func saveDeviceState() throws(DeviceStateError) -> [UInt8] {
        var state = server.filesystem.exportMigrationState()
        state.fuseMinor = server.negotiatedMinor
        state.fuseFlags = server.negotiatedFlags.rawValue
        return MigrationCodec.encode(state)
    }

    func loadDeviceState(_ bytes: [UInt8]) throws(DeviceStateError) {
        do throws(MigrationFormatError) {
            let state = try MigrationCodec.decode(bytes)
            try server.filesystem.importMigrationState(state)
            server.restoreSession(flags: InitFlags(rawValue: state.fuseFlags), minor: state.fuseMinor)
        } catch {
            throw DeviceStateError(error.description)
        }
    }
}
