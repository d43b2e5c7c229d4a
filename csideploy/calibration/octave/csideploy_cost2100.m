function csideploy_cost2100(model_dir, network, link_scenario, f_lo, f_hi, bs_xyz, square, spacing, n, seed, out_file)
% Draw n channels with the COST2100 model in MODEL_DIR and save them to OUT_FILE (-v7).
% Part of csideploy (Apache-2.0); runs the COST2100 model (GPL-3) as a separate program.
%
% Per sample: UE uniform in the square [square(1), square(2)]^2 (z = 0), one snapshot, a
% 32-position virtual linear array along x at the BS (BSPosSpacing = spacing). Saved:
%   Hd (n, 32, 32): antenna x delay, the first 32 rows of the IFFT over 1024 tones;
%   Hf (n, 32, 125): antenna x the frequencies f_lo + (1024 m / 257) df, m = 0..124;
%   redraws: draws that stopped with "No active cluster!" and were drawn again.
addpath(model_dir);
rand('seed', seed); randn('seed', seed); rand('state', seed); randn('state', seed);
tones = 1024; ants = 32; keep = 32; nf = 125;
df = (f_hi - f_lo) / tones;
freqs = f_lo + (0:tones-1) * df;
ffrac = f_lo + (tones * (0:nf-1) / 257) * df;
Hd = complex(zeros(n, ants, keep)); Hf = complex(zeros(n, ants, nf));
redraws = 0; i = 1;
while i <= n
  ms = [square(1) + rand(1, 2) * (square(2) - square(1)), 0];
  try
    [~, ~, link, ~] = cost2100(network, link_scenario, [f_lo f_hi], 1, 1, bs_xyz, ...
                               [spacing 0 0], ants, ms, [0 0 0]);
  catch err
    if isempty(strfind(err.message, 'No active cluster'))
      rethrow(err);
    end
    redraws = redraws + 1;
    continue;
  end
  for k = 1:ants
    paths = [link(1).channel{k, 1}.h; link(1).channel{k, 1}.h_los];
    tau = paths(:, 5); amp = paths(:, 6);
    h = ifft(amp.' * exp(-1i * 2 * pi * tau * freqs));
    Hd(i, k, :) = h(1:keep);
    Hf(i, k, :) = amp.' * exp(-1i * 2 * pi * tau * ffrac);
  end
  i = i + 1;
end
save('-v7', out_file, 'Hd', 'Hf', 'redraws');
end
