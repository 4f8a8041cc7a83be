//! Root package: owns tests/ and examples/.
