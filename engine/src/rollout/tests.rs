use proptest::prelude::*;

use super::machine::*;
use super::spec::{Analysis, BlueGreen, Canary, CanaryStep, Pause};
use crate::syntax::DurationSpec;

fn analysis(metric: &str, max: f64, count: u32, failure_limit: u32) -> Analysis {
    Analysis {
        metrics: vec![],
        metric: Some(metric.into()),
        min: None,
        max: Some(max),
        interval: Some(DurationSpec(std::time::Duration::from_secs(10))),
        count: Some(count),
        failure_limit: Some(failure_limit),
    }
}

fn step(weight: Option<u32>, pause: Option<Pause>, analysis: Option<Analysis>) -> CanaryStep {
    CanaryStep { weight, pause, analysis }
}

fn canary(steps: Vec<CanaryStep>) -> super::spec::Strategy {
    super::spec::Strategy { canary: Some(Canary { steps }), blue_green: None }
}

fn minutes(m: u64) -> Pause {
    Pause::For(DurationSpec(std::time::Duration::from_secs(m * 60)))
}

fn start(strategy: &super::spec::Strategy) -> Rollout {
    Rollout::new(1, "churn", "production", 2, Some(1), plan(strategy).unwrap(), 0, "test")
}

#[test]
fn a_canary_moves_weight_waits_measures_and_promotes() {
    let s = canary(vec![
        step(Some(10), None, None),
        step(None, Some(minutes(10)), None),
        step(None, None, Some(analysis("error_rate", 0.01, 2, 0))),
        step(Some(50), None, None),
    ]);
    let mut r = start(&s);
    assert_eq!(r.apply(0, Input::Tick), vec![Effect::Weight(10)]);
    assert_eq!(r.wake_at(), Some(600_000));
    assert!(r.apply(599_999, Input::Tick).is_empty());
    assert!(r.apply(600_000, Input::Tick).is_empty());
    assert_eq!(r.wake_at(), Some(610_000), "the first measurement one interval in");
    assert_eq!(r.apply(610_000, Input::Tick), vec![Effect::Measure(vec!["error_rate".into()])]);
    // A second tick while the measurement is out asks nothing more.
    assert!(r.apply(610_001, Input::Tick).is_empty());
    assert!(r.apply(610_002, Input::Measured(vec![("error_rate".into(), Some(0.0))])).is_empty());
    assert_eq!(r.wake_at(), Some(620_002));
    assert_eq!(r.apply(620_002, Input::Tick), vec![Effect::Measure(vec!["error_rate".into()])]);
    let end = r.apply(620_003, Input::Measured(vec![("error_rate".into(), Some(0.005))]));
    assert_eq!(
        end,
        vec![
            Effect::Weight(50),
            Effect::MoveAlias {
                alias: "production".into(),
                to: Some(2),
                reason: "rollout 1 succeeded".into()
            },
            Effect::Weight(100),
            Effect::Finished { succeeded: true, reason: "version 2 took `production`".into() },
        ]
    );
    assert_eq!(r.phase, Phase::Succeeded);
    assert!(r.apply(700_000, Input::Abort("late".into())).is_empty(), "an ended rollout stays ended");
}

#[test]
fn a_failed_analysis_aborts_to_weight_zero_and_an_inconclusive_one_pauses() {
    let s =
        canary(vec![step(Some(20), None, None), step(None, None, Some(analysis("error_rate", 0.01, 3, 1)))]);
    let mut r = start(&s);
    r.apply(0, Input::Tick);
    assert_eq!(r.apply(10_000, Input::Tick).len(), 1);
    let measured = |v: Option<f64>| Input::Measured(vec![("error_rate".into(), v)]);
    // One failure is tolerated (failure_limit 1); no value yet is inconclusive: a pause.
    assert!(r.apply(1, measured(Some(0.5))).is_empty());
    r.apply(10_001, Input::Tick);
    assert!(r.apply(10_002, measured(None)).is_empty());
    assert!(matches!(&r.phase, Phase::Paused { reason } if reason.contains("inconclusive")), "{:?}", r.phase);
    assert_eq!(r.wake_at(), None);
    r.apply(20_000, Input::Resume);
    assert_eq!(r.phase, Phase::Progressing);
    // The second failure is one too many.
    r.apply(20_002, Input::Tick);
    let out = r.apply(20_003, measured(Some(0.2)));
    assert_eq!(out[0], Effect::Weight(0));
    assert!(
        matches!(&out[1], Effect::Finished { succeeded: false, reason } if reason.contains("error_rate=0.2000")),
        "{out:?}"
    );
    assert_eq!((r.weight, r.phase.name()), (0, "aborted"));
    assert_eq!(r.measurements.iter().filter(|m| m.verdict == Verdict::Failed).count(), 2);
}

#[test]
fn blue_green_previews_switches_and_switches_back() {
    let s = super::spec::Strategy {
        canary: None,
        blue_green: Some(BlueGreen {
            preview: None,
            pre_promotion: Some(analysis("latency_p99", 5.0, 1, 0)),
            post_promotion: Some(analysis("error_rate", 0.01, 1, 0)),
            auto_promote: true,
        }),
    };
    let mut r = start(&s);
    let out = r.apply(0, Input::Tick);
    assert!(matches!(&out[0], Effect::MoveAlias { alias, to: Some(2), .. } if alias == "preview"));
    assert_eq!(r.apply(10_000, Input::Tick), vec![Effect::Measure(vec!["latency_p99".into()])]);
    let out = r.apply(10_000, Input::Measured(vec![("latency_p99".into(), Some(1.0))]));
    assert!(
        matches!(&out[0], Effect::MoveAlias { alias, to: Some(2), .. } if alias == "production"),
        "{out:?}"
    );
    assert_eq!(r.candidate_share(), 100);
    let out = r.apply(20_000, Input::Tick);
    assert_eq!(out, vec![Effect::Measure(vec!["error_rate".into()])]);
    let out = r.apply(20_002, Input::Measured(vec![("error_rate".into(), Some(0.3))]));
    assert!(
        matches!(&out[0], Effect::MoveAlias { alias, to: Some(1), .. } if alias == "production"),
        "switch back: {out:?}"
    );
    assert!(matches!(&out[1], Effect::Finished { succeeded: false, .. }));
    assert_eq!(r.candidate_share(), 0);
}

#[test]
fn a_refused_final_move_is_an_abort_not_a_success() {
    let mut r = start(&canary(vec![step(Some(50), None, None)]));
    let out = r.apply(0, Input::Tick);
    assert!(matches!(out.last(), Some(Effect::Finished { succeeded: true, .. })));
    assert_eq!(r.phase, Phase::Succeeded);
    // The registry refused the move to the candidate.
    let out = r.alias_failed(1, "production", "protected".into());
    assert_eq!(
        out,
        vec![Effect::Weight(0), Effect::Finished { succeeded: false, reason: "protected".into() }]
    );
    assert_eq!((r.phase.name(), r.candidate_share()), ("aborted", 0));
    assert!(r.alias_failed(2, "production", "again".into()).is_empty(), "an ended rollout stays ended");
    // Blue-green: a refused switch aborts without switching back a move that never happened.
    let mut r = start(&super::spec::Strategy {
        canary: None,
        blue_green: Some(BlueGreen {
            preview: None,
            pre_promotion: None,
            post_promotion: None,
            auto_promote: true,
        }),
    });
    r.apply(0, Input::Tick);
    let out = r.alias_failed(1, "production", "protected".into());
    assert!(!out.iter().any(|e| matches!(e, Effect::MoveAlias { .. })), "{out:?}");
    assert_eq!(r.phase.name(), "aborted");
    assert!(
        check_preview(
            &super::spec::Strategy {
                canary: None,
                blue_green: Some(BlueGreen {
                    preview: Some("production".into()),
                    pre_promotion: None,
                    post_promotion: None,
                    auto_promote: true
                })
            },
            "production"
        )
        .is_err()
    );
}

#[test]
fn plans_refuse_what_cannot_run() {
    let bad = |s: super::spec::Strategy| plan(&s).unwrap_err();
    assert!(bad(canary(vec![])).contains("at least one step"));
    assert!(bad(canary(vec![step(Some(120), None, None)])).contains("over 100"));
    assert!(bad(canary(vec![step(Some(10), Some(minutes(1)), None)])).contains("exactly one"));
    let mut a = analysis("error_rate", 0.01, 1, 0);
    a.metric = Some("vibes".into());
    assert!(bad(canary(vec![step(None, None, Some(a))])).contains("not a rollout metric"));
    let mut a = analysis("error_rate", 0.01, 1, 0);
    a.count = Some(0);
    assert!(bad(canary(vec![step(None, None, Some(a))])).contains("at least 1"));
    assert!(bad(super::spec::Strategy { canary: None, blue_green: None }).contains("exactly one"));
    assert_eq!(Cond::parse("<= 0.5").unwrap(), Cond { op: Op::Le, bound: 0.5 });
    assert!(Cond::parse("~ 1").is_err());
}

fn strategy() -> impl proptest::strategy::Strategy<Value = super::spec::Strategy> {
    let step = prop_oneof![
        (0u32..=100).prop_map(|w| self::step(Some(w), None, None)),
        (0u64..3).prop_map(|m| self::step(None, Some(minutes(m)), None)),
        Just(self::step(None, Some(Pause::UntilResumed(Default::default())), None)),
        (1u32..4, 0u32..2).prop_map(|(c, f)| self::step(
            None,
            None,
            Some(analysis("error_rate", 0.05, c, f))
        )),
    ];
    let canary = proptest::collection::vec(step, 1..7).prop_map(self::canary);
    let blue_green =
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(pre, post, auto)| super::spec::Strategy {
            canary: None,
            blue_green: Some(BlueGreen {
                preview: None,
                pre_promotion: pre.then(|| analysis("error_rate", 0.05, 1, 0)),
                post_promotion: post.then(|| analysis("error_rate", 0.05, 2, 0)),
                auto_promote: auto,
            }),
        });
    prop_oneof![canary, blue_green]
}

#[derive(Debug, Clone)]
enum Act {
    Tick(u32),
    Measure(Option<u8>),
    Pause,
    Resume,
    Abort,
    Promote,
}

fn acts() -> impl proptest::strategy::Strategy<Value = Vec<Act>> {
    proptest::collection::vec(
        prop_oneof![
            6 => (0u32..200_000).prop_map(Act::Tick),
            6 => proptest::option::of(0u8..10).prop_map(Act::Measure),
            1 => Just(Act::Pause),
            2 => Just(Act::Resume),
            1 => Just(Act::Abort),
            1 => Just(Act::Promote),
        ],
        0..60,
    )
}

proptest! {
    /// Whatever happens: the weight stays a percent, an ended rollout never changes again
    /// and says so exactly once, an aborted one sends no traffic to the candidate and leaves
    /// the alias on the stable version, a succeeded one gave the alias to the candidate, and
    /// without a person's promote it passed every analysis within its failure limit.
    #[test]
    fn rollouts_keep_their_promises(s in strategy(), acts in acts()) {
        let mut r = start(&s);
        let mut now = 0i64;
        let mut finished = 0;
        let mut alias_to: Option<Option<u64>> = None;
        let mut promoted = false;
        let mut stage = 0;
        let mut all = r.apply(now, Input::Tick);
        for act in acts {
            let input = match act {
                Act::Tick(dt) => { now += dt as i64; Input::Tick }
                // Error rates of 0 to 9%: above the 5% limit fails.
                Act::Measure(v) => Input::Measured(vec![("error_rate".into(), v.map(|v| v as f64 / 100.0))]),
                Act::Pause => Input::Pause("a person".into()),
                Act::Resume => Input::Resume,
                Act::Abort => Input::Abort("a person".into()),
                Act::Promote => { promoted = true; Input::Promote }
            };
            let before = r.clone();
            let out = r.apply(now, input);
            if before.phase.is_done() {
                prop_assert!(out.is_empty());
                prop_assert_eq!(&before, &r);
            }
            prop_assert!(r.weight <= 100);
            prop_assert!(r.stage >= stage && r.stage <= r.stages.len());
            stage = r.stage;
            if let Some(w) = r.wake_at() { prop_assert!(w >= 0); }
            all.extend(out);
        }
        for e in &all {
            match e {
                Effect::Finished { .. } => finished += 1,
                Effect::MoveAlias { alias, to, .. } if alias == "production" => alias_to = Some(*to),
                _ => {}
            }
        }
        prop_assert_eq!(finished, usize::from(r.phase.is_done()));
        match &r.phase {
            Phase::Aborted { .. } => {
                prop_assert_eq!(r.weight, 0);
                prop_assert_eq!(r.candidate_share(), 0);
                prop_assert!(alias_to.is_none() || alias_to == Some(Some(1)), "the alias went back: {:?}", alias_to);
            }
            Phase::Succeeded => {
                prop_assert_eq!(r.weight, 100);
                prop_assert_eq!(alias_to, Some(Some(2)));
                if !promoted {
                    for (i, st) in r.stages.iter().enumerate() {
                        if let Stage::Analysis(p) = st {
                            let failed = r.measurements.iter().filter(|m| m.stage == i && m.verdict == Verdict::Failed).count();
                            prop_assert!(failed as u32 <= p.failure_limit);
                        }
                    }
                }
            }
            _ => prop_assert!(alias_to.is_none() || r.switched, "the alias moved before the end: {:?}", alias_to),
        }
    }
}
