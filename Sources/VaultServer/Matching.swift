// QIDO-RS matching rules (PS3.4 C.2.2.2): wildcards for person names, ranges for dates.

/// `*` matches any run of characters, `?` exactly one; case-insensitive, as viewers expect for names.
enum Wildcard {
    static func matches(pattern: String, _ value: String) -> Bool {
        let p = Array(pattern.lowercased()), v = Array(value.lowercased())
        var pi = 0, vi = 0, star = -1, mark = 0
        while vi < v.count {
            if pi < p.count && (p[pi] == "?" || p[pi] == v[vi]) {
                pi += 1; vi += 1
            } else if pi < p.count && p[pi] == "*" {
                star = pi; mark = vi; pi += 1
            } else if star >= 0 {
                pi = star + 1; mark += 1; vi = mark
            } else {
                return false
            }
        }
        while pi < p.count && p[pi] == "*" { pi += 1 }
        return pi == p.count
    }
}

/// A DICOM date or date range: `YYYYMMDD`, `A-B`, `A-`, `-B`.
struct DateRange {
    let from: String?
    let to: String?

    init?(_ text: String) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
        func valid(_ s: String) -> Bool { s.count == 8 && s.allSatisfy(\.isNumber) }
        switch parts.count {
        case 1 where valid(parts[0]): (from, to) = (parts[0], parts[0])
        case 2 where (parts[0].isEmpty || valid(parts[0])) && (parts[1].isEmpty || valid(parts[1])) && parts != ["", ""]:
            (from, to) = (parts[0].isEmpty ? nil : parts[0], parts[1].isEmpty ? nil : parts[1])
        default: return nil
        }
    }

    func contains(_ date: String) -> Bool {
        guard !date.isEmpty else { return false }
        if let from, date < from { return false }
        if let to, date > to { return false }
        return true
    }
}
