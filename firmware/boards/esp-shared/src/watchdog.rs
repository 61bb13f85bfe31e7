//! The RTC watchdog (RWDT): resets the whole chip if the main loop stops for longer than the
//! timeout. esp-hal's `init` disables every watchdog; [`start`] arms this one.

use core::cell::RefCell;

use critical_section::Mutex;
use esp_hal::peripherals::RTC_TIMER;
use esp_hal::rtc_cntl::{Rtc, Rwdt, RwdtStage};
use esp_hal::time::Duration;

static WDT: Mutex<RefCell<Option<Rwdt>>> = Mutex::new(RefCell::new(None));

/// Arm the RTC watchdog: stage 0 resets the system after `timeout_ms` without [`feed`].
pub fn start(rtc_timer: RTC_TIMER<'static>, timeout_ms: u32) {
    let rtc = Rtc::new(rtc_timer);
    let mut wdt = rtc.rwdt;
    wdt.set_timeout(RwdtStage::Stage0, Duration::from_millis(timeout_ms as u64));
    wdt.enable();
    wdt.feed();
    critical_section::with(|cs| {
        WDT.borrow_ref_mut(cs).replace(wdt);
    });
}

/// Restart the watchdog's count (no-op before [`start`]).
pub fn feed() {
    critical_section::with(|cs| {
        if let Some(w) = WDT.borrow_ref_mut(cs).as_mut() {
            w.feed();
        }
    });
}
