import XCTest

final class XattrMapTestsPlaceholder: XCTestCase {}
