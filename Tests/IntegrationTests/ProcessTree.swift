import Foundation

/// The sum of one numeric field of /proc/PID/status ("VmRSS" in KiB, "Threads") over
/// `root` and all its descendants: a daemon in namespace mode is a parent and a child.
func processTreeStatusTotal(field: String, root: pid_t) -> Int {
    var parentOf: [pid_t: pid_t] = [:]
    for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
        guard let pid = pid_t(name), let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { continue }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        if fields.count >= 2, let ppid = pid_t(fields[1]) { parentOf[pid] = ppid }
    }
    var tree = [root]
    var index = 0
    while index < tree.count {
        tree += parentOf.filter { $0.value == tree[index] }.map(\.key)
        index += 1
    }
    var total = 0
    for pid in tree {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { continue }
        for line in status.split(separator: "\n") where line.hasPrefix(field + ":") {
            total += Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" })[1]) ?? 0
        }
    }
    return total
}
