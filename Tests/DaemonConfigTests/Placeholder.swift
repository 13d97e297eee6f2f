import XCTest

final class DaemonConfigTestsPlaceholder: XCTestCase {}
