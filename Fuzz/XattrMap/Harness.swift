#if canImport(Glibc)
import Glibc
#endif
import FuzzSupport
import XattrMap

// The xattrmap rule parser and the mapping of names both ways. The input is
// the rule text up to its first NUL, then a NUL-separated list of names.
// Invariants: parsing never traps and either succeeds or names a rule and a
// position inside the text; a parsed rule set prints (`description`) as text
// that parses back to the same rules; every name maps without trapping, a
// renamed client name is the rule's prefix plus the name, a renamed server name
// is a non-empty tail of it; a listing filtered from the host's names is no
// longer than the host's, has no empty names, and is as long as
// `filteredListingSize` says.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzXattrMap(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    let split = bytes.firstIndex(of: 0) ?? bytes.count
    let text = String(decoding: bytes[0..<split], as: UTF8.self)
    let names = UnsafeRawBufferPointer(rebasing: bytes[min(split + 1, bytes.count)...])

    let map: XattrMap
    do {
        map = try XattrMap(rules: text)
    } catch {
        if error.ruleIndex < 0 || error.position < 0 || error.position > text.utf8.count + 1 {
            fuzzFailure("error outside the text: \(error) for \(text.utf8.count) bytes")
        }
        _ = error.description
        return 0
    }
    do {
        let again = try XattrMap(rules: map.description)
        if again.rules != map.rules { fuzzFailure("'\(map.description)' parses to other rules than '\(text)'") }
    } catch {
        fuzzFailure("'\(map.description)', printed from '\(text)', does not parse: \(error)")
    }

    var start = 0
    let list = Array(names)
    while start <= list.count {
        let end = list[start...].firstIndex(of: 0) ?? list.count
        let name = Array(list[start..<end])
        name.withUnsafeBufferPointer { n in
            switch map.mapClientName(n) {
            case .pass:
                break
            case .rename(let host):
                if host.count <= name.count || Array(host.suffix(name.count)) != name {
                    fuzzFailure("client name \(name) renamed to \(host), which does not end with it")
                }
            case .deny(let e):
                if e != 1 && e != 95 { fuzzFailure("client name denied with errno \(e)") }
            }
            switch map.mapServerName(n) {
            case .pass, .hide:
                break
            case .rename(let guest):
                if guest.isEmpty || guest.count >= name.count || Array(name.suffix(guest.count)) != guest {
                    fuzzFailure("server name \(name) shown as \(guest)")
                }
            }
        }
        start = end + 1
    }

    var guestList: [UInt8] = []
    map.filterListing(names, into: &guestList)
    if guestList.count != map.filteredListingSize(names) {
        fuzzFailure("listing of \(guestList.count) bytes, size said \(map.filteredListingSize(names))")
    }
    if guestList.count > names.count + 1 { fuzzFailure("listing grew from \(names.count) to \(guestList.count) bytes") }
    if guestList.first == 0 || guestList.indices.dropFirst().contains(where: { guestList[$0] == 0 && guestList[$0 - 1] == 0 }) {
        fuzzFailure("empty name in the guest's listing")
    }
    if let last = guestList.last, last != 0 { fuzzFailure("listing not ended by NUL") }
    return 0
}

#if !FUZZING
@main struct Replay {
    static func main() { exit(replayMain(fuzzXattrMap, seeds: {
        let names = "user.a\0security.selinux\0user.virtiofs.trusted.x\0trusted.b\0user.virtiofs.\0system.posix_acl_access\0"
        let rules = [
            ":prefix:all::user.virtiofs.::bad:all:::",
            ":map:trusted.:user.virtiofs.:",
            "/prefix/client/trusted./user.virtiofs./ /prefix/server/user.virtiofs./user.virtiofs./ /ok/all/// ",
            ":ok:client:security.:: :bad:server:user.virtiofs.:: :unsupported:all:::",
            "|prefix|server||user.virtiofs.| |bad|client|trusted.|| |ok|all|||",
            ":map::user.virtiofs.:",
            ":bogus:all:::",
        ]
        return rules.enumerated().map { i, r in ("rules-\(i)", Array((r + "\0" + names).utf8)) }
    }, dictionary: {
        ["prefix", "ok", "bad", "unsupported", "map", "all", "client", "server", "user.virtiofs.", "trusted.",
         "security.", "system.", ":", " ", "::"].enumerated().map { dictionaryEntry("word_\($0.offset)", Array($0.element.utf8)) }
    })) }
}
#endif
