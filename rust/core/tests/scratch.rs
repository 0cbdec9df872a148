use pykregistry_core::{Attrs, Level, Parent, Registry};

#[test]
fn scratch_gen() {
    let r = Registry::new();
    let a = Attrs {
        name: "x",
        target: "t",
        level: Level::Info,
        metadata: None,
    };
    let mut ids = vec![];
    for _ in 0..20000 {
        let id = r.new_span(&a, Parent::Root, |_, _| {}).unwrap();
        ids.push(id.into_u64());
        assert!(r.try_close(id).unwrap());
    }
    println!("GEN {}", Registry::<pykregistry_core::NoHooks>::GENERATIONS);
    println!("{:x?}", &ids[..4]);
    let first_repeat = ids.iter().skip(1).position(|&x| x == ids[0]).map(|p| p + 1);
    println!("first repeat {:?}", first_repeat);
    let set: std::collections::HashSet<_> = ids[..8191].iter().collect();
    println!("distinct in first 8191: {}", set.len());
    // two-slot interleave
    let x = r.new_span(&a, Parent::Root, |_, _| {}).unwrap();
    let y = r.new_span(&a, Parent::Root, |_, _| {}).unwrap();
    println!("{:x} {:x}", x.into_u64(), y.into_u64());
}
