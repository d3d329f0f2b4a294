use super::*;

fn raw(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).unwrap()
}

fn price_text(text: &str) -> Result<String, WireError> {
    price(&raw(text)).map(|p| p.to_string())
}

#[test]
fn prices_keep_the_digits_of_the_number_text() {
    assert_eq!(price_text("187.1234567").unwrap(), "187.1234567");
    assert_eq!(price_text("189.10").unwrap(), "189.10");
    assert_eq!(price_text("42").unwrap(), "42");
    assert_eq!(price_text("0.0001").unwrap(), "0.0001");
    // More digits than an f64 holds.
    assert_eq!(
        price_text("12345678901.123456789").unwrap(),
        "12345678901.123456789"
    );
    assert_eq!(price_text("1.5e-3").unwrap(), "0.0015");
    assert_eq!(price_text("2E2").unwrap(), "200");
    assert_eq!(price_text("1.25e+1").unwrap(), "12.5");
    for bad in ["\"187.1\"", "null", "true", "[1]", "{}"] {
        assert_eq!(
            price_text(bad),
            Err(WireError::Price(bad.to_owned())),
            "{bad}"
        );
    }
}

#[test]
fn a_quote_and_a_trade_become_fields_with_exact_prices() {
    let text = r#"[{"T":"q","S":"AAPL","bx":"V","bp":187.1234567,"bs":3,"ax":"Q","ap":187.13,"as":12,"c":["R"],"z":"C","t":"2024-03-01T14:30:00.123456789Z"},
                   {"T":"t","i":52983525029461,"S":"AAPL","x":"V","p":187.120,"s":100,"c":["@"],"z":"C","t":"2024-03-01T14:30:00.5Z"}]"#;
    let msgs: Vec<_> = frame(text)
        .unwrap()
        .into_iter()
        .map(|m| message(m).unwrap())
        .map(|m| match m {
            Message::Data { sym, t, fields } => (sym.into_owned(), t, fields),
            other => panic!("not data: {other:?}"),
        })
        .collect();
    let (sym, t, q) = &msgs[0];
    assert_eq!((sym.as_str(), *t), ("AAPL", 1_709_303_400_123));
    assert_eq!(q.bp.unwrap().to_string(), "187.1234567");
    assert_eq!(q.ap.unwrap().to_string(), "187.13");
    assert_eq!((q.bs, q.as_, q.lp), (Some(3), Some(12), None));
    let (_, t, trade) = &msgs[1];
    assert_eq!(*t, 1_709_303_400_500);
    assert_eq!(trade.lp.unwrap().to_string(), "187.120");
    assert_eq!((trade.ls, trade.bp, trade.v), (Some(100), None, None));
}

#[test]
fn control_messages_are_read() {
    let text = r#"[{"T":"success","msg":"authenticated"},{"T":"error","code":402,"msg":"auth failed"},
                   {"T":"subscription","trades":["AAPL"],"quotes":["AAPL","MSFT"],"bars":[]},{"T":"b","S":"AAPL"}]"#;
    let msgs: Vec<_> = frame(text)
        .unwrap()
        .into_iter()
        .map(|m| message(m).unwrap())
        .collect();
    assert_eq!(msgs[0], Message::Success("authenticated".into()));
    assert_eq!(
        msgs[1],
        Message::Error {
            code: 402,
            msg: "auth failed".into()
        }
    );
    assert_eq!(
        msgs[2],
        Message::Subscription {
            trades: 1,
            quotes: 2
        }
    );
    assert_eq!(msgs[3], Message::Other);
}

#[test]
fn bad_messages_are_refused_one_by_one() {
    assert!(matches!(frame(r#"{"T":"q"}"#), Err(WireError::Frame(_))));
    let cases = [
        (r#"{"S":"AAPL"}"#, "no T"),
        (r#"{"T":"q","t":"2024-03-01T14:30:00Z"}"#, "no symbol"),
        (r#"{"T":"q","S":"AAPL"}"#, "no time"),
        (r#"{"T":"q","S":"AAPL","t":"yesterday"}"#, "bad time"),
        (
            r#"{"T":"q","S":"AAPL","t":"2024-03-01T14:30:00Z","bp":"1.2"}"#,
            "string price",
        ),
        (
            r#"{"T":"q","S":"AAPL","t":"2024-03-01T14:30:00Z","bs":1.5}"#,
            "fractional size",
        ),
        (
            r#"{"T":"t","S":"AAPL","t":"2024-03-01T14:30:00Z","s":5}"#,
            "trade without price",
        ),
        (
            r#"{"T":"t","S":"AAPL","t":"2024-03-01T14:30:00Z","p":1}"#,
            "trade without size",
        ),
        (r#"{"T":"error","msg":"?"}"#, "error without code"),
    ];
    for (text, what) in cases {
        assert!(message(&raw(text)).is_err(), "{what}");
    }
}

#[test]
fn rfc3339_times_become_epoch_milliseconds() {
    assert_eq!(epoch_ms("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        epoch_ms("2024-02-29T23:59:59.999Z"),
        Some(1_709_251_199_999)
    );
    assert_eq!(
        epoch_ms("2024-03-01T09:30:00-05:00"),
        Some(1_709_303_400_000)
    );
    assert_eq!(
        epoch_ms("2024-03-01T15:30:00.1+01:00"),
        Some(1_709_303_400_100)
    );
    assert_eq!(epoch_ms("1969-12-31T23:59:59Z"), Some(-1_000));
    for bad in [
        "",
        "2024-03-01",
        "2024-03-01T14:30:00",
        "2024-13-01T14:30:00Z",
        "2024-03-01T24:00:00Z",
        "2024-03-01T14:30:00.Z",
        "2024-03-01T14:30:00+0500",
        "2024-03-01T14:30:00Zjunk",
        "２０２4-03-01T14:30:00Z",
    ] {
        assert_eq!(epoch_ms(bad), None, "{bad}");
    }
}

#[test]
fn error_codes_map_to_reconnect_or_fail() {
    let fatal = [402, 406, 409];
    for code in [400, 401, 402, 403, 404, 405, 406, 407, 409, 500, 599] {
        let e = provider_error(code, "msg");
        assert_eq!(
            matches!(e, FeedError::Fatal(_)),
            fatal.contains(&code),
            "{code}: {e}"
        );
        assert!(e.to_string().contains(&format!("({code} msg)")), "{e}");
    }
    assert!(provider_error(402, "auth failed")
        .to_string()
        .contains("authentication failed"));
}
