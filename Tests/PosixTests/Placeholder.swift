import XCTest

final class PosixTestsPlaceholder: XCTestCase {}
