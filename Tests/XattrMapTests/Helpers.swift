import XattrMap

// Small adapters so the tables can be written with strings; the engine works on bytes.

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

func parse(_ text: String) throws(XattrMapError) -> XattrMap { try XattrMap(rules: text) }

extension XattrMap {
    func client(_ name: String) -> ClientNameMapping { client(bytes(name)) }
    func client(_ name: [UInt8]) -> ClientNameMapping {
        name.withUnsafeBufferPointer { mapClientName($0) }
    }
    func server(_ name: String) -> ServerNameMapping { server(bytes(name)) }
    func server(_ name: [UInt8]) -> ServerNameMapping {
        name.withUnsafeBufferPointer { mapServerName($0) }
    }
    /// Runs `filterListing` on a host list and checks `filteredListingSize` agrees with it.
    func listing(_ host: [UInt8], reusing buffer: [UInt8] = []) -> (list: [UInt8], size: Int) {
        var guest = buffer
        host.withUnsafeBytes { filterListing($0, into: &guest) }
        let size = host.withUnsafeBytes { filteredListingSize($0) }
        return (guest, size)
    }
}

extension ClientNameMapping {
    static func renamed(_ s: String) -> ClientNameMapping { .rename(bytes(s)) }
}

extension ServerNameMapping {
    static func renamed(_ s: String) -> ServerNameMapping { .rename(bytes(s)) }
}

/// A NUL-separated listxattr buffer, each name ended by NUL.
func nulList(_ names: [String]) -> [UInt8] {
    names.flatMap { bytes($0) + [0] }
}

typealias R = XattrMap.Rule
