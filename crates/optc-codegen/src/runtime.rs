//! Host functions the generated code calls. AOT builds must provide these symbols too.

/// `ln(x)` in f32.
pub extern "C" fn optc_rt_logf(x: f32) -> f32 {
    x.ln()
}

/// `x^y` computed in f64 and rounded once (matches the reference interpreter).
pub extern "C" fn optc_rt_powf(x: f32, y: f32) -> f32 {
    (x as f64).powf(y as f64) as f32
}

/// Every runtime symbol: `(name, address)`.
pub fn symbols() -> Vec<(&'static str, *const u8)> {
    vec![
        ("optc_rt_logf", optc_rt_logf as *const u8),
        ("optc_rt_powf", optc_rt_powf as *const u8),
    ]
}
