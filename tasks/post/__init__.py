"""Post-training phase (report section 3.4): a stage per module (pairs, reward, dpo); lib/ holds their helpers."""
