function t = toc(varargin)
% Part of csideploy. The COST2100 model reseeds its generator with rand('twister', toc*1e5),
% which makes every run differ. Run by csideploy's driver, that "elapsed time" is drawn from
% the generator the driver seeded instead: the same fresh seed in spirit, but the same draws
% for the same batch seed, so the data are reproducible. Whole values of toc*1e5 below 2^31.
t = floor(rand() * 2^31) / 1e5;
end
